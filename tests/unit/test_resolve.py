"""Resolution: a definition plus a session becomes concrete, safely quoted jobs, decided once."""

from __future__ import annotations

import shlex
from pathlib import Path, PurePosixPath

import pytest

from sl_pipelines.core.definition import load_definition, parse_definition
from sl_pipelines.core.job import Environment, EnvironmentKind, JobDefaults
from sl_pipelines.core.layout import SessionPaths
from sl_pipelines.core.resolve import resolve_pipeline, run_token
from sl_pipelines.errors import PipelineDefinitionError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ENV = Environment(EnvironmentKind.VENV, "/srv/env")


def _opt(argv: tuple[str, ...], option: str) -> str:
    """The value of an option given as ``--option=value`` or ``--option value``."""
    for i, part in enumerate(argv):
        if part.startswith(option + "="):
            return part.split("=", 1)[1]
        if part == option:
            return argv[i + 1]
    raise AssertionError(f"{option} not in {argv}")


def _session(name: str = "2026-01-01-10-00-00") -> SessionPaths:
    return SessionPaths(PurePosixPath("/storage"), PurePosixPath("/work"), "proj", "A1", name)


def test_suite2p_fans_out_one_job_per_plane() -> None:
    resolved = resolve_pipeline(
        load_definition(CONFIGS / "suite2p.yaml"),
        (_session(),),
        manager_id=42,
        environment=ENV,
        parameters={"planes": 4},
    )
    assert [len(resolved.stages[s]) for s in (1, 2, 3)] == [1, 4, 1]
    assert resolved.job_count == 6
    plane_args = [r.job.commands[0] for r in resolved.stages[2]]
    assert [_opt(a, "--plane") for a in plane_args] == ["0", "1", "2", "3"]
    assert all(_opt(a, "--job-count") == "6" for a in plane_args)


def test_job_names_carry_the_run_token_and_are_unique() -> None:
    resolved = resolve_pipeline(
        load_definition(CONFIGS / "behavior.yaml"), (_session(),), manager_id=7, environment=ENV
    )
    names = [r.name for r in resolved.all_jobs()]
    assert len(set(names)) == 7
    assert all(name.startswith(f"slp-{resolved.token}-1-") for name in names)
    assert resolved.token == run_token(7, "behavior", (_session(),))


def test_resolution_is_deterministic_for_a_manager_id_and_different_across_ids() -> None:
    definition = load_definition(CONFIGS / "behavior.yaml")
    first = resolve_pipeline(definition, (_session(),), manager_id=1, environment=ENV)
    again = resolve_pipeline(definition, (_session(),), manager_id=1, environment=ENV)
    other = resolve_pipeline(definition, (_session(),), manager_id=2, environment=ENV)
    assert first.all_jobs() == again.all_jobs()
    assert first.token != other.token


def test_tracked_arguments_and_tracker_path() -> None:
    resolved = resolve_pipeline(
        load_definition(CONFIGS / "checksum.yaml"), (_session(),), manager_id=9, environment=ENV
    )
    argv = resolved.stages[1][0].job.commands[0]
    tracker = "/storage/proj/A1/2026-01-01-10-00-00/tracking_data/checksum_resolution_tracker.yaml"
    assert str(resolved.tracker_path) == tracker
    assert argv[:2] == ("sl-worker", "checksum")
    assert _opt(argv, "--tracker") == tracker
    assert _opt(argv, "--manager-id") == "9"
    assert _opt(argv, "--job") == resolved.stages[1][0].name


def test_hostile_session_name_stays_one_argument() -> None:
    name = "-a b;rm -rf ~ $(touch /tmp/pwned)"
    resolved = resolve_pipeline(
        load_definition(CONFIGS / "checksum.yaml"), (_session(name),), manager_id=3, environment=ENV
    )
    argv = resolved.stages[1][0].job.commands[0]
    assert _opt(argv, "--session") == name
    assert shlex.split(shlex.join(argv)) == list(argv)
    job = resolved.stages[1][0].job
    assert name not in job.name
    assert name not in str(job.working_directory)


def test_definition_environment_overrides_the_backend_default() -> None:
    data = {
        "pipeline": "video",
        "environment": {"conda": "dlc"},
        "stages": [{"name": "s", "jobs": [{"name": "a", "command": "run {session}"}]}],
    }
    resolved = resolve_pipeline(parse_definition(data), (_session(),), manager_id=1, environment=ENV)
    assert resolved.stages[1][0].job.environment == Environment(EnvironmentKind.CONDA, "dlc")


@pytest.mark.parametrize(
    ("command", "fan_out", "problem"),
    [
        ("run {nope}", None, "unknown placeholder {nope}"),
        ("run", "cameras", "has no value"),
        ("run 'x", None, "shell"),
    ],
)
def test_resolution_errors_name_the_job(command: str, fan_out: str | None, problem: str) -> None:
    job: dict[str, object] = {"name": "a", "command": command}
    if fan_out:
        job["fan_out"] = fan_out
    definition = parse_definition({"pipeline": "video", "stages": [{"name": "s", "jobs": [job]}]})
    with pytest.raises(PipelineDefinitionError, match=problem) as info:
        resolve_pipeline(definition, (_session(),), manager_id=1, environment=ENV)
    assert "job 'a'" in str(info.value)


def test_dataset_pipeline_fans_out_over_its_sessions() -> None:
    sessions = (_session("s1"), _session("s2"), _session("s3"))
    resolved = resolve_pipeline(
        load_definition(CONFIGS / "multiday.yaml"), sessions, manager_id=5, environment=ENV
    )
    extract = [r.job.commands[0] for r in resolved.stages[1]]
    assert [_opt(a, "--session") for a in extract] == ["s1", "s2", "s3"]
    assert resolved.tracker_path.parent == sessions[0].tracking_data
    assert len(resolved.stages[2]) == 1


@pytest.mark.parametrize("pipeline", ["forging", "multiday"])
def test_each_job_of_a_dataset_works_on_its_own_sessions_project_and_animal(pipeline: str) -> None:
    sessions = (
        SessionPaths(PurePosixPath("/storage"), PurePosixPath("/work"), "p", "A1", "s1"),
        SessionPaths(PurePosixPath("/storage"), PurePosixPath("/work"), "q", "A2", "s2"),
    )
    resolved = resolve_pipeline(
        load_definition(CONFIGS / f"{pipeline}.yaml"), sessions, manager_id=5, environment=ENV
    )
    per_session = [r.job.commands[0] for r in resolved.stages[1]]
    found = [(_opt(a, "--project"), _opt(a, "--animal"), _opt(a, "--session")) for a in per_session]
    assert found == [("p", "A1", "s1"), ("q", "A2", "s2")]
    assert all(_opt(a, "--tracker") == str(resolved.tracker_path) for a in per_session)
    assert resolved.tracker_path.parent == sessions[0].tracking_data  # one tracker for the dataset


def test_backend_exports_reach_every_job_script() -> None:
    resolved = resolve_pipeline(
        load_definition(CONFIGS / "suite2p.yaml"),
        (_session(),),
        manager_id=1,
        environment=ENV,
        exports=(("SL_TRACKER_LOCK", "soft"),),
    )
    for job in resolved.all_jobs():
        assert ("SL_TRACKER_LOCK", "soft") in job.job.exports
        assert "export SL_TRACKER_LOCK=soft" in job.job.render()


def test_profile_job_defaults_fill_what_the_definition_leaves_unset() -> None:
    data = {
        "pipeline": "behavior",
        "defaults": {"qos": "long"},
        "stages": [
            {
                "name": "one",
                "jobs": [
                    {"name": "plain", "command": "true"},
                    {"name": "gpu", "command": "true", "partition": "gpu", "gres": "gpu:1"},
                ],
            }
        ],
    }
    profile = JobDefaults(partition="main", account="lab", qos="normal", gres="tmpdisk:10")
    resolved = resolve_pipeline(
        parse_definition(data), (_session(),), manager_id=1, environment=ENV, job_defaults=profile
    )
    plain, gpu = (job.job for job in resolved.stages[1])
    assert (plain.resources.partition, plain.resources.account, plain.resources.qos) == (
        "main",
        "lab",
        "long",
    )
    assert plain.resources.gres == "tmpdisk:10"
    assert (gpu.resources.partition, gpu.resources.gres, gpu.resources.account) == ("gpu", "gpu:1", "lab")
    script = plain.render()
    assert "#SBATCH --partition=main" in script and "#SBATCH --account=lab" in script
    assert "#SBATCH --qos=long" in script, "the definition's own defaults beat the profile's"


def test_without_profile_defaults_nothing_is_added() -> None:
    resolved = resolve_pipeline(
        load_definition(CONFIGS / "behavior.yaml"), (_session(),), manager_id=1, environment=ENV
    )
    script = resolved.all_jobs()[0].job.render()
    assert "--partition" not in script and "--account" not in script

"""Rendering of sbatch scripts: golden files, quoting, and refusal of values sbatch would misread."""

from __future__ import annotations

import subprocess
from pathlib import Path, PurePosixPath

import pytest

from sl_pipelines.core.job import Environment, EnvironmentKind, Job, Resources
from sl_pipelines.core.script import activation_prefix, format_time_limit, render_script
from sl_pipelines.errors import ConfigurationError

GOLDEN = Path(__file__).parent / "golden"
FOLDER = PurePosixPath("/work/sessions/p1/a1/s1/sl_jobs/run-1234")

JOBS = {
    "minimal": Job(name="hello", working_directory=FOLDER / "hello", commands=(("echo", "hello"),)),
    "venv_full": Job(
        name="suite2p-plane-3",
        working_directory=FOLDER / "plane 3",
        commands=(("sl-worker", "demo", "--plane", "3"), ("sl-tracker", "stop", "--manager-id", "42")),
        resources=Resources(
            cpus=4,
            memory_mb=8000,
            time_limit_minutes=1500,
            partition="gpu",
            account="lab-a",
            qos="normal",
            gres="gpu:1",
        ),
        environment=Environment(EnvironmentKind.VENV, "/opt/envs/sl env"),
        array="0-9%2",
        dependency="afterok:123:456",
        exports=(("SL_TRACKER_LOCK", "soft"), ("SESSION", "a b;rm -rf ~")),
    ),
    "conda_modules": Job(
        name="behavior",
        working_directory=FOLDER / "behavior",
        commands=(("python", "-c", "print('it''s $HOME')"),),
        environment=Environment(EnvironmentKind.CONDA, "behavior-env", modules=("cuda/12.1", "ffmpeg")),
    ),
    "hostile_names": Job(
        name='a b;rm -rf ~ "q" %j',
        working_directory=PurePosixPath("/data/a b;$(touch x)`y` 'q' %j"),
        commands=(("cat", "a b;$(touch x)"),),
        environment=Environment(EnvironmentKind.MODULES, modules=("matlab/R2024a",)),
    ),
}


@pytest.mark.parametrize("case", sorted(JOBS))
def test_matches_golden_file(case: str) -> None:
    expected = (GOLDEN / f"{case}.sh").read_text()
    assert render_script(JOBS[case]) == expected


@pytest.mark.parametrize("case", sorted(JOBS))
def test_is_valid_bash(case: str, tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_text(render_script(JOBS[case]))
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0


def test_hostile_values_stay_data_when_bash_runs_the_script(tmp_path: Path) -> None:
    folder = tmp_path / "a b;$(touch pwned)`touch pwned2` 'q' %j"
    folder.mkdir()
    job = Job(
        name="x",
        working_directory=PurePosixPath(folder),
        commands=(("bash", "-c", 'printf "%s|" "$@" > out.txt', "_", "a b;$(touch pwned)", "$HOME", "'"),),
        exports=(("VALUE", "$(touch pwned3)"),),
    )
    script = tmp_path / "job.sh"
    script.write_text(render_script(job))
    subprocess.run(["bash", str(script)], check=True, cwd=tmp_path)
    assert (folder / "out.txt").read_text() == "a b;$(touch pwned)|$HOME|'|"
    assert not [p for p in tmp_path.rglob("pwned*")]


def test_missing_working_directory_fails_the_job(tmp_path: Path) -> None:
    job = Job(name="x", working_directory=PurePosixPath(tmp_path / "gone"), commands=(("true",),))
    script = tmp_path / "job.sh"
    script.write_text(render_script(job))
    assert subprocess.run(["bash", str(script)], check=False, capture_output=True).returncode != 0


def test_failing_command_sets_the_exit_code(tmp_path: Path) -> None:
    job = Job(
        name="x", working_directory=PurePosixPath(tmp_path), commands=(("bash", "-c", "exit 3"), ("true",))
    )
    script = tmp_path / "job.sh"
    script.write_text(render_script(job))
    assert subprocess.run(["bash", str(script)], check=False).returncode == 3


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"name": "two\nlines"}, "job name"),
        ({"name": "my-hetjob-x"}, "job name"),
        ({"name": ""}, "job name"),
        ({"working_directory": PurePosixPath("/a\nb")}, "working directory"),
        ({"array": "1-3; rm"}, "array"),
        ({"dependency": "afterok:1 2"}, "dependency"),
        ({"resources": Resources(partition="gpu long")}, "partition"),
        ({"resources": Resources(cpus=0)}, "cpus"),
        ({"resources": Resources(memory_mb=-1)}, "memory_mb"),
        ({"exports": (("BAD-NAME", "x"),)}, "exports"),
        ({"commands": ()}, None),
        ({"commands": ((),)}, None),
        ({"environment": Environment(EnvironmentKind.VENV, "")}, "environment"),
    ],
)
def test_refuses_values_that_cannot_be_rendered_safely(changes: dict[str, object], key: str | None) -> None:
    job = JOBS["minimal"]
    broken = Job(**{**job.__dict__, **changes})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError) as caught:
        render_script(broken)
    assert caught.value.key == key


@pytest.mark.parametrize(
    ("minutes", "text"), [(1, "0-00:01:00"), (60, "0-01:00:00"), (1500, "1-01:00:00"), (10081, "7-00:01:00")]
)
def test_time_limits_use_slurm_format(minutes: int, text: str) -> None:
    assert format_time_limit(minutes) == text


@pytest.mark.parametrize(
    ("environment", "prefix"),
    [
        (Environment(), ""),
        (Environment(EnvironmentKind.VENV, "/opt/my env/"), ". '/opt/my env/bin/activate' && "),
        (
            Environment(EnvironmentKind.CONDA, "proc"),
            'eval "$(conda shell.posix hook)" && conda activate proc && ',
        ),
        (Environment(EnvironmentKind.MODULES, modules=("a/1", "b c")), "module load a/1 'b c' && "),
    ],
)
def test_activation_prefix(environment: Environment, prefix: str) -> None:
    assert activation_prefix(environment) == prefix


def test_job_render_uses_render_script() -> None:
    assert JOBS["minimal"].render() == render_script(JOBS["minimal"])


if (
    __name__ == "__main__"
):  # regenerate the golden files after an intended change: python tests/unit/test_script.py
    for _name, _job in JOBS.items():
        (GOLDEN / f"{_name}.sh").write_text(render_script(_job))

"""Pipeline definitions: every shipped config loads, and bad files are reported with file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sl_pipelines.core.definition import conform_parameter, load_definition, parse_definition
from sl_pipelines.core.job import EnvironmentKind
from sl_pipelines.errors import ConfigurationError, PipelineDefinitionError
from sl_pipelines.vocabulary import ProcessingPipelines

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("pipeline", list(ProcessingPipelines))
def test_every_pipeline_has_a_valid_shipped_definition(pipeline: ProcessingPipelines) -> None:
    definition = load_definition(CONFIGS / f"{pipeline.short_name}.yaml")
    assert definition.pipeline is pipeline
    assert definition.tracker == pipeline.tracker_file.value
    assert definition.stages


def test_shipped_shapes_match_the_lab() -> None:
    behavior = load_definition(CONFIGS / "behavior.yaml")
    assert [len(s.jobs) for s in behavior.stages] == [7]
    suite2p = load_definition(CONFIGS / "suite2p.yaml")
    assert [s.name for s in suite2p.stages] == ["binarize", "planes", "combine"]
    assert suite2p.stages[1].jobs[0].fan_out == "planes"


def _minimal(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "pipeline": "behavior",
        "stages": [{"name": "one", "jobs": [{"name": "a", "command": "true"}]}],
    }
    data.update(overrides)
    return data


BAD = [
    ({"pipeline": "behaviour"}, "pipeline", "Unknown pipeline"),
    ({"stages": []}, "stages", "non-empty list"),
    ({"stages": [{"name": "s", "jobs": [{"name": "a"}]}]}, "stages[0].jobs[0].command", "non-empty text"),
    ({"stages": [{"name": "s", "jobs": [{"name": "a", "command": "x", "cpus": 0}]}]}, "cpus", "positive"),
    ({"stages": [{"name": "s", "jobs": [{"name": "a", "command": "x", "cpus": 1.5}]}]}, "cpus", "whole"),
    ({"stages": [{"name": "s", "jobs": [{"name": "a b", "command": "x"}]}]}, "name", "letters, digits"),
    ({"stages": [{"name": "s", "jobs": [{"name": "a", "command": "x", "cpu": 2}]}]}, "cpu", "unknown key"),
    ({"stages": [{"name": "s", "jobs": [{"name": "a", "command": "x"}, {"name": "a", "command": "y"}]}]},
     "jobs", "unique"),
    ({"environment": {"venv": "/v", "conda": "c"}}, "environment", "either venv or conda"),
    ({"scope": "project"}, "scope", "'session' or 'dataset'"),
    ({"colour": "blue"}, "colour", "unknown key"),
    ({"parameters": {"planes": True}}, "parameters.planes", "a number"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "key", "problem"), BAD)
def test_bad_definitions_name_the_file_and_the_key(
    tmp_path: Path, change: dict[str, object], key: str, problem: str
) -> None:
    path = tmp_path / "behavior.yaml"
    path.write_text(yaml.safe_dump(_minimal(**change)))
    with pytest.raises(PipelineDefinitionError) as info:
        load_definition(path)
    message = str(info.value)
    assert str(path) in message
    assert key in message
    assert problem in message


def test_not_yaml_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("stages: [unclosed\n")
    with pytest.raises(PipelineDefinitionError, match="not valid YAML"):
        load_definition(path)


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(PipelineDefinitionError, match=r"Cannot read pipeline definition .*nothing\.yaml"):
        load_definition(tmp_path / "nothing.yaml")


def test_environment_forms() -> None:
    assert parse_definition(_minimal()).environment is None
    assert parse_definition(_minimal(environment="none")).environment.kind is EnvironmentKind.NONE  # type: ignore[union-attr]
    venv = parse_definition(_minimal(environment={"venv": "/opt/env", "modules": ["cuda/12"]})).environment
    assert venv is not None
    assert (venv.kind, venv.value, venv.modules) == (EnvironmentKind.VENV, "/opt/env", ("cuda/12",))


def test_defaults_apply_to_jobs_and_jobs_override_them() -> None:
    data = _minimal(defaults={"cpus": 4, "memory_gb": 2})
    data["stages"] = [
        {"name": "s", "jobs": [{"name": "a", "command": "x"}, {"name": "b", "command": "y", "cpus": 8}]}
    ]
    stage = parse_definition(data).stages[0]
    assert [(j.resources.cpus, j.resources.memory_mb) for j in stage.jobs] == [(4, 2048), (8, 2048)]


@pytest.mark.parametrize(
    ("value", "default", "expected"),
    [
        (4, 3, 4),
        ("4", 3, 4),
        ("face,left", ("face", "left", "right"), ("face", "left")),
        (["face"], ("face", "left"), ("face",)),
        ("face", ("face", "left"), ("face",)),
        (7, "x", "7"),
        ("anything", None, "anything"),
    ],
)
def test_given_parameters_take_the_kind_of_the_default(
    value: object, default: object, expected: object
) -> None:
    assert conform_parameter("k", value, default, "--param") == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "default"),
    [
        (4.0, 3),
        ("four", 3),
        (True, 3),
        ([], ("a",)),
        (",", ("a",)),
        (3, ("a",)),
        ({"a": 1}, "x"),
        (2.5, None),
    ],
)
def test_a_parameter_of_the_wrong_kind_is_an_error_naming_its_source(value: object, default: object) -> None:
    with pytest.raises(ConfigurationError, match=r"session_data\.yaml: parameter 'k'"):
        conform_parameter("k", value, default, "session_data.yaml")  # type: ignore[arg-type]

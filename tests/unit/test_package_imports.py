"""``import sl_pipelines`` is cheap: the commands that run inside jobs never load the SSH stack."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import sl_pipelines


def _modules_after(code: str) -> dict[str, bool]:
    """Runs ``code`` in a fresh interpreter; reports which heavy modules it loaded."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps({{m: m in sys.modules for m in sys.argv[1:]}}))"
    heavy = ["paramiko", "sl_pipelines.adapters.ssh", "sl_pipelines.adapters.server"]
    done = subprocess.run(
        [sys.executable, "-c", probe, *heavy], capture_output=True, text=True, check=True, timeout=60
    )
    return dict(json.loads(done.stdout))


def test_the_job_side_commands_do_not_load_paramiko() -> None:
    loaded = _modules_after("import sl_pipelines, sl_pipelines.cli.tracker, sl_pipelines.cli.worker")
    assert loaded == {
        "paramiko": False,
        "sl_pipelines.adapters.ssh": False,
        "sl_pipelines.adapters.server": False,
    }


def test_from_sl_pipelines_import_server_still_works() -> None:
    loaded = _modules_after(
        "from sl_pipelines import Server, load_profile; assert Server.__name__ == 'Server'"
    )
    assert loaded["paramiko"] is True


@pytest.mark.parametrize("name", sl_pipelines.__all__)
def test_every_public_name_is_the_object_of_its_module(name: str) -> None:
    value = getattr(sl_pipelines, name)
    home = importlib.import_module(value.__module__)
    assert getattr(home, name) is value
    assert name in dir(sl_pipelines)


def test_star_import_gives_every_public_name() -> None:
    namespace: dict[str, object] = {}
    exec("from sl_pipelines import *", namespace)
    assert set(sl_pipelines.__all__) <= set(namespace)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = sl_pipelines.Nope  # type: ignore[attr-defined]

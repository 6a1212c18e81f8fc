"""Bad input through sl-process against the real server: one clear sentence, a non-zero exit, nothing lost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Testbed

from sl_pipelines.adapters.profiles import ServerProfile, save_profile
from sl_pipelines.cli import process


@pytest.fixture(autouse=True)
def private_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SL_PIPELINES_DATA_DIR", str(tmp_path / "user-data"))


def _changed_known_hosts(testbed: Testbed, tmp_path: Path) -> Path:
    line = Path(testbed.known_hosts).read_text().split()
    other = "AAAAC3NzaC1lZDI1NTE5AAAAIHVgcnBg2kgEmmyvmg1k5ld6wdaMHvJFOlYwWkLxWl9z"
    path = tmp_path / "changed_known_hosts"
    path.write_text(f"{line[0]} {line[1]} {other}\n")
    return path


CASES = {
    "unreachable port": ({"port": 1}, 1, "Cannot reach 127.0.0.1:1"),
    "unresolvable host": ({"host": "no-such-host.invalid"}, 1, "Cannot reach no-such-host.invalid"),
    "bad credentials": ({"password": "wrong", "key_file": None}, 1, "refused every credential"),
    "unknown host key": ({"known_hosts": "EMPTY"}, 1, "is not in any known_hosts file"),
    "changed host key": ({"known_hosts": "CHANGED"}, 1, "has CHANGED"),
    "unknown session": ({}, 2, "'no such;session $(x)' was not found"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_one_clear_error(
    case: str,
    testbed: Testbed,
    make_profile: Callable[..., ServerProfile],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    changes, expected_code, message = CASES[case]
    changes = dict(changes)
    if changes.get("known_hosts") == "EMPTY":
        (tmp_path / "empty").write_text("")
        changes["known_hosts"] = tmp_path / "empty"
    elif changes.get("known_hosts") == "CHANGED":
        changes["known_hosts"] = _changed_known_hosts(testbed, tmp_path)
    profile = make_profile("acct", name="errors", **changes)
    save_profile(profile)
    before = sorted(Path(testbed.cluster("acct").storage_root).rglob("*"))
    code = process.main(["behavior", "no such;session $(x)", "--server", "errors", "--json"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == expected_code, err
    assert err.startswith("error: ")
    assert message in err
    assert "Traceback" not in err
    assert err.count("error:") == 1
    assert sorted(Path(testbed.cluster("acct").storage_root).rglob("*")) == before, "nothing was touched"

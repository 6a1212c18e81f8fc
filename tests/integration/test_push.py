"""``sl-server push`` against the testbed: verified, resumable after a killed client, never over other data.

The testbed's storage volume is a folder of this machine, so the tests look at what arrived (and flip a
bit in it) directly, as root, while everything the upload does goes through SSH.
"""

from __future__ import annotations

import contextlib
import os
import pty
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pipeline_helpers import SL_PROCESS

from sl_pipelines.adapters.profiles import ServerProfile, save_profile
from sl_pipelines.adapters.server import Server
from sl_pipelines.adapters.upload_remote import UploadPaths
from sl_pipelines.cli import server as server_cli
from sl_pipelines.core.layout import SessionPaths
from sl_pipelines.workers.checksum import CHECKSUM_FILE, calculate_checksum

MIB = 1 << 20
SL_SERVER = [sys.executable, "-c", "from sl_pipelines.cli.server import main; raise SystemExit(main())"]
RESUME_MIB = int(os.environ.get("SL_TEST_PUSH_MIB", "1024"))
"""Size of the session the kill-and-resume test uploads (the issue's 1 GiB; smaller for a quick run)."""


def make_session(folder: Path, total_mib: int, *, smalls: int = 300) -> Path:
    """A session folder whose raw_data holds one big file, 16 MiB files and small ones (random data)."""
    raw = folder / "raw_data"
    (raw / "frames").mkdir(parents=True)
    (raw / "meta").mkdir()
    block = os.urandom(MIB)
    big = max(1, total_mib // 4)
    with (raw / "big.bin").open("wb") as handle:
        for index in range(big):
            handle.write(os.urandom(64) + block[index % 97 + 64 :] + block[: index % 97])
    for index in range((total_mib - big) // 16):
        (raw / "frames" / f"f{index:03d}.bin").write_bytes(os.urandom(16 * MIB))
    for index in range(smalls):
        (raw / "meta" / f"m{index:04d}.json").write_bytes(os.urandom(2048 + index))
    return folder


def files_of(root: Path) -> dict[str, int]:
    return {
        path.relative_to(root).as_posix(): path.stat().st_size for path in root.rglob("*") if path.is_file()
    }


def valid_prefix(local: Path, remote: Path) -> int:
    """How many first bytes of ``remote`` are right (0 when any of them is wrong, or it is too long)."""
    if not remote.is_file() or remote.stat().st_size > local.stat().st_size:
        return 0
    size = remote.stat().st_size
    with local.open("rb") as a, remote.open("rb") as b:
        while chunk := b.read(8 * MIB):
            if a.read(len(chunk)) != chunk:
                return 0
    return size


def wait_until_still(folder: Path, seconds: float = 0.6) -> None:
    """Waits until nothing more arrives in ``folder`` (sshd may still write what was in flight)."""
    last = -1
    while (now := sum(files_of(folder).values())) != last:
        last = now
        time.sleep(seconds)


def run_checksum(spec: str) -> subprocess.CompletedProcess[str]:
    """``sl-process checksum SPEC --server push``: the checksum pipeline on the server."""
    argv = [*SL_PROCESS, "checksum", spec, "--server", "push"]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)


@pytest.fixture
def profile(make_profile: Callable[..., ServerProfile]) -> ServerProfile:
    """The acct cluster's profile, saved (as ``push``) for the command line."""
    saved = make_profile("acct", name="push")
    save_profile(saved)
    return saved


@pytest.fixture
def session(profile: ServerProfile, project: str) -> Iterator[SessionPaths]:
    yield SessionPaths(profile.storage_root, profile.working_root, project, "A1", "2026-01-05-10-00-00")


def push(folder: Path, target: SessionPaths, *extra: str) -> list[str]:
    return ["push", str(folder), "--server", "push", "--project", target.project, "--animal", target.animal,
            "--session", target.session, *extra]  # fmt: skip


@pytest.mark.slow
def test_a_killed_upload_resumes_sending_only_what_is_missing(
    tmp_path: Path, profile: ServerProfile, session: SessionPaths, private_data_dir: Path
) -> None:
    local = make_session(tmp_path / "acq", RESUME_MIB)
    raw = local / "raw_data"
    total = sum(files_of(raw).values())
    paths = UploadPaths.beside(session.raw_data)
    partial = Path(str(paths.partial))
    client = subprocess.Popen(
        [*SL_SERVER, *push(local, session)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 300
    while not partial.is_dir() or sum(files_of(partial).values()) < total * 45 // 100:
        assert client.poll() is None and time.monotonic() < deadline, client.communicate()
        time.sleep(0.02)
    client.send_signal(signal.SIGKILL)
    client.communicate()
    wait_until_still(partial)
    assert not Path(str(session.raw_data)).exists(), "nothing is moved into place before it is complete"
    arrived = {name: valid_prefix(raw / name, partial / name) for name in files_of(raw)}
    missing = total - sum(arrived.values())
    assert total // 4 < missing < total * 3 // 4, (missing, total)

    with Server(profile) as server:
        server.connect()
        before = server.transport.wire_bytes_sent
        report = server.push_session(raw, session.project, session.animal, session.session)
        wire = server.transport.wire_bytes_sent
    assert before is not None and wire is not None
    print(f"resume: missing {missing} of {total} bytes; sent {report.sent_bytes} (file content), "
          f"{wire - before} on the wire")  # fmt: skip
    assert missing <= report.sent_bytes <= missing + MIB, "only what was missing (small files whole)"
    assert missing <= wire - before <= missing * 1.02 + 2 * MIB, "the socket carried only that much"
    final = Path(str(session.raw_data))
    assert files_of(final) == {**files_of(raw), CHECKSUM_FILE: 33}
    assert not partial.exists() and not Path(str(paths.manifest)).exists()
    assert (final / CHECKSUM_FILE).read_text() == calculate_checksum(raw) + "\n"
    spec = f"{session.project}/{session.animal}/{session.session}"
    done = run_checksum(spec)
    assert done.returncode == 0, done.stderr


def test_a_bit_flip_on_the_server_is_named_by_the_next_push_and_fails_the_checksum(
    tmp_path: Path, profile: ServerProfile, session: SessionPaths, private_data_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    local = make_session(tmp_path / "acq", 48, smalls=20)
    assert server_cli.main(push(local, session)) == 0
    assert "verified by xxHash" in capsys.readouterr().out
    flipped = Path(str(session.raw_data)) / "frames" / "f001.bin"
    with flipped.open("r+b") as handle:
        handle.seek(12345)
        byte = handle.read(1)
        handle.seek(12345)
        handle.write(bytes([byte[0] ^ 0x04]))
    before = {
        name: (Path(str(session.raw_data)) / name).stat().st_mtime_ns for name in files_of(local / "raw_data")
    }

    assert server_cli.main(push(local, session)) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "frames/f001.bin has different content there" in err, err
    assert "already exists" in err and "nothing was changed" in err
    after = {
        name: (Path(str(session.raw_data)) / name).stat().st_mtime_ns for name in files_of(local / "raw_data")
    }
    assert after == before, "the server's copy is left as it is"

    spec = f"{session.project}/{session.animal}/{session.session}"
    done = run_checksum(spec)
    assert done.returncode == 1
    assert "does not match its stored checksum" in " ".join(done.stderr.split())


def test_an_identical_session_is_already_uploaded_and_then_runs_the_pipeline(
    tmp_path: Path, profile: ServerProfile, session: SessionPaths, private_data_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    local = make_session(tmp_path / "acq", 16, smalls=5)
    (local / "raw_data" / CHECKSUM_FILE).write_text(calculate_checksum(local / "raw_data") + "\n")
    assert server_cli.main(push(local, session)) == 0
    capsys.readouterr()
    (Path(str(session.raw_data)) / CHECKSUM_FILE).unlink()  # an older upload that stored none

    assert server_cli.main(push(local, session, "--then", "checksum")) == 0
    out = capsys.readouterr().out
    assert "is already on push" in out and "nothing was sent" in out
    assert "SUCCEEDED" in out, "the checksum pipeline ran on the session and found it right"
    stored = (Path(str(session.raw_data)) / CHECKSUM_FILE).read_text()
    assert stored == (local / "raw_data" / CHECKSUM_FILE).read_text()


def test_leftovers_of_another_upload_are_replaced_not_kept(
    tmp_path: Path, profile: ServerProfile, session: SessionPaths
) -> None:
    local = make_session(tmp_path / "acq", 48, smalls=5)
    raw = local / "raw_data"
    partial = Path(str(UploadPaths.beside(session.raw_data).partial))
    (partial / "frames").mkdir(parents=True)
    (partial / "stale").mkdir()
    (partial / "stale" / "other.bin").write_bytes(b"from another session")
    (partial / "big.bin").write_bytes(b"x" * 1000)  # the wrong first bytes: sent again whole
    cut = (raw / "frames" / "f000.bin").read_bytes()[: 5 * MIB]
    (partial / "frames" / "f000.bin").write_bytes(cut)  # right first bytes: completed
    subprocess.run(["chown", "-R", f"{profile.user}:", str(partial.parents[2])], check=True)

    with Server(profile) as server:
        report = server.push_session(raw, session.project, session.animal, session.session)
    assert report.sent_bytes == report.size_bytes - 5 * MIB
    final = Path(str(session.raw_data))
    assert files_of(final) == {**files_of(raw), CHECKSUM_FILE: 33}
    assert (final / "frames" / "f000.bin").read_bytes() == (raw / "frames" / "f000.bin").read_bytes()
    assert not (final / "stale").exists()


def test_the_progress_bar_is_drawn_on_a_terminal_and_a_pipe_gets_one_line(
    tmp_path: Path, profile: ServerProfile, session: SessionPaths
) -> None:
    local = make_session(tmp_path / "acq", 64, smalls=5)
    code, out, drawn = _run_with_terminal_stderr([*SL_SERVER, *push(local, session)])
    assert code == 0
    assert "uploading" in drawn and "MB/s" in drawn, drawn[-500:]
    assert len(out.strip().splitlines()) == 1 and "Uploaded" in out

    piped = subprocess.run([*SL_SERVER, *push(local, session)], capture_output=True, text=True, check=False)
    assert piped.returncode == 0
    assert piped.stderr == "", "no progress bar where stderr is not a terminal"
    assert piped.stdout.count("\n") == 1 and "already on push" in piped.stdout


def _run_with_terminal_stderr(argv: list[str]) -> tuple[int, str, str]:
    """Runs ``argv`` with stderr on a pseudo-terminal; returns exit status, stdout, the terminal's text."""
    controller, terminal = pty.openpty()
    chunks: list[bytes] = []

    def read() -> None:
        with contextlib.suppress(OSError):  # EIO once the other side is closed
            while chunk := os.read(controller, 1 << 16):
                chunks.append(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    env = {**os.environ, "COLUMNS": "120"}
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=terminal, env=env, timeout=120, check=False)
    os.close(terminal)
    reader.join(10)
    os.close(controller)
    return done.returncode, done.stdout.decode(), b"".join(chunks).decode(errors="replace")


def test_ctrl_c_says_how_to_resume_and_the_next_run_sends_the_rest(
    tmp_path: Path, profile: ServerProfile, session: SessionPaths
) -> None:
    local = make_session(tmp_path / "acq", 256, smalls=5)
    partial = Path(str(UploadPaths.beside(session.raw_data).partial))
    as_from_a_terminal = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    argv = [sys.executable, "-c", as_from_a_terminal + SL_SERVER[2], *push(local, session)]
    client = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while not partial.is_dir() or sum(files_of(partial).values()) < 64 * MIB:
        assert client.poll() is None, client.communicate()
        time.sleep(0.02)
    client.send_signal(signal.SIGINT)
    _, err = client.communicate(timeout=20)
    assert client.returncode == 130, err
    assert "Interrupted: run the same command again to resume the upload" in " ".join(err.decode().split())
    assert not Path(str(session.raw_data)).exists()

    again = subprocess.run([*SL_SERVER, *push(local, session)], capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stderr
    assert "had arrived before" in again.stdout

"""The server's side of a session upload: one small Python program, run with a JSON request on stdin.

It needs only the server environment's Python and its ``xxhash`` (the environment that provides
``sl-worker`` has both). Three requests, each ONE remote command:

- ``inspect``: the existing ``raw_data`` (every file hashed, to compare with the local session), the
  partial folder (sizes; files the manifest does not vouch for are hashed) and the manifest;
- ``verify``: hash the given files of the partial folder, fsync them, and append those that match the
  expected digest to the manifest (fsynced): the record of what arrived verified;
- ``finalize``: check that every file is there with its size, remove leftovers, write the checksum file
  atomically, fsync, and rename the partial folder to ``raw_data`` (refused if it exists by then).

The answer is one JSON document between marker lines, so a login banner before it does not matter.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from sl_pipelines.core.framing import MARKER, split_sections
from sl_pipelines.core.upload_plan import FileFacts
from sl_pipelines.errors import TransferError

if TYPE_CHECKING:
    from sl_pipelines.adapters.ssh import SSHTransport

_PROGRAM = r"""
import json, os, sys
MARK = sys.argv[1]
def answer(data):
    print(MARK + " begin upload"); print(json.dumps(data)); print(MARK + " end 0"); sys.exit(0)
try:
    import xxhash
except ImportError:
    answer({"error": "the server's Python (%s) has no xxhash module" % sys.executable})
request = json.load(sys.stdin)
def digest(path, fsync=False):
    h = xxhash.xxh3_128()
    fd = os.open(path, os.O_RDONLY)
    try:
        while True:
            block = os.read(fd, 4 << 20)
            if not block:
                break
            h.update(block)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    return h.hexdigest()
def listing(root, hashed):
    files, dirs = {}, []
    for top, names, leaves in os.walk(root):
        rel = os.path.relpath(top, root)
        names[:] = [n for n in names if not os.path.islink(os.path.join(top, n))]
        dirs += [os.path.normpath(os.path.join(rel, n)) for n in names]
        for n in leaves:
            p = os.path.join(top, n)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            name = os.path.normpath(os.path.join(rel, n))
            files[name] = [os.path.getsize(p), digest(p) if hashed(name, os.path.getsize(p)) else None]
    return files, dirs
def manifest(path):
    found = {}
    try:
        with open(path) as f:
            for line in f:
                try:
                    entry = json.loads(line)
                    found[entry["path"]] = [entry["size"], entry["xxh3_128"]]
                except (ValueError, KeyError, TypeError):
                    pass
    except FileNotFoundError:
        pass
    return found
def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
def inspect(r):
    final = listing(r["final"], lambda n, s: True)[0] if os.path.isdir(r["final"]) else None
    known = manifest(r["manifest"])
    partial = {}
    if os.path.isdir(r["partial"]):
        partial = listing(r["partial"], lambda n, s: known.get(n, [None])[0] != s)[0]
    return {"final": final, "partial": partial, "manifest": known}
def verify(r):
    found = {}
    lines = []
    for name, (size, expected) in r["files"].items():
        p = os.path.join(r["partial"], name)
        try:
            found[name] = [os.path.getsize(p), digest(p, fsync=True)]
        except FileNotFoundError:
            continue
        if found[name] == [size, expected]:
            lines.append(json.dumps({"path": name, "size": size, "xxh3_128": expected}) + "\n")
    if lines:
        with open(r["manifest"], "a") as f:
            f.write("".join(lines)); f.flush(); os.fsync(f.fileno())
    return {"files": found}
def finalize(r):
    partial, final = r["partial"], r["final"]
    files, dirs = listing(partial, lambda n, s: False)
    for name, size in r["files"].items():
        if files.get(name, [None])[0] != size:
            return {"error": "%s is missing or incomplete in %s" % (name, partial)}
    for name in sorted(set(files) - set(r["files"])):
        os.remove(os.path.join(partial, name))
    for name in sorted(set(dirs) - set(r["dirs"]), key=len, reverse=True):
        os.rmdir(os.path.join(partial, name))
    target = os.path.join(partial, r["checksum_name"])
    temp = target + ".%d.tmp" % os.getpid()
    with open(temp, "w") as f:
        f.write(r["checksum_text"]); f.flush(); os.fsync(f.fileno())
    os.replace(temp, target)
    fsync_dir(partial)
    if os.path.lexists(final):
        return {"error": "%s appeared during the upload" % final}
    os.rename(partial, final)
    fsync_dir(os.path.dirname(final))
    if os.path.exists(r["manifest"]):
        os.remove(r["manifest"])
    return {"ok": True}
try:
    answer({"inspect": inspect, "verify": verify, "finalize": finalize}[request["op"]](request))
except OSError as exc:
    answer({"error": "%s: %s" % (exc.strerror or exc, exc.filename or "")})
"""


@dataclass(frozen=True)
class RemoteState:
    """What ``inspect`` found on the server.

    Attributes:
        final: the existing ``raw_data`` (every file with its digest), or None when there is none.
        partial: the partial folder's files (digests only where the manifest does not vouch for them).
        manifest: the files verified by earlier runs.
    """

    final: dict[str, FileFacts] | None
    partial: dict[str, FileFacts]
    manifest: dict[str, FileFacts]


@dataclass(frozen=True)
class UploadPaths:
    """Where one session's upload lives on the server."""

    final: PurePosixPath
    partial: PurePosixPath
    manifest: PurePosixPath

    @classmethod
    def beside(cls, raw_data: PurePosixPath) -> UploadPaths:
        """The partial folder and manifest of an upload into ``raw_data``, in the same session folder."""
        partial = raw_data.with_name(f".uploading-{raw_data.name}")
        return cls(raw_data, partial, partial.with_name(f"{partial.name}.manifest.jsonl"))


#: The slowest read a storage volume is expected to manage while the server hashes (bytes per second).
SLOWEST_READ = 20e6


def inspect(transport: SSHTransport, paths: UploadPaths, session_bytes: int) -> RemoteState:
    """The existing raw data, the partial folder and the manifest, in one remote command.

    An existing ``raw_data`` is hashed whole (about ``session_bytes``), so the command may take as long as
    reading that much at :data:`SLOWEST_READ`.
    """
    data = _call(transport, paths, {"op": "inspect"}, reads=session_bytes)
    final = data["final"]
    return RemoteState(
        None if final is None else _facts(final),
        _facts(data["partial"]),
        _facts(data["manifest"]),
    )


def verify(
    transport: SSHTransport, paths: UploadPaths, expected: Mapping[str, FileFacts]
) -> dict[str, FileFacts]:
    """Hashes ``expected``'s files in the partial folder; those that match are added to the manifest.

    Returns what the server found for each file (a file that is not there is left out).
    """
    files = {name: [facts.size, facts.digest] for name, facts in expected.items()}
    reads = sum(facts.size for facts in expected.values())
    return _facts(_call(transport, paths, {"op": "verify", "files": files}, reads=reads)["files"])


def finalize(
    transport: SSHTransport,
    paths: UploadPaths,
    local: Mapping[str, FileFacts],
    dirs: tuple[str, ...],
    checksum: tuple[str, str],
) -> None:
    """Moves the complete partial folder into place with the checksum file ``(name, text)``.

    Never retried blindly: if the connection drops during it, the next upload finds the session in
    place (or the partial folder still there) and goes on from what it finds.
    """
    request = {
        "op": "finalize",
        "files": {name: facts.size for name, facts in local.items()},
        "dirs": list(dirs),
        "checksum_name": checksum[0],
        "checksum_text": checksum[1],
    }
    _call(transport, paths, request, idempotent=False)


def _call(
    transport: SSHTransport,
    paths: UploadPaths,
    request: dict[str, Any],
    *,
    reads: int = 0,
    idempotent: bool = True,
) -> dict[str, Any]:
    python = transport.settings.remote_python
    command = f"{python} -c {shlex.quote(_PROGRAM)} {shlex.quote(MARKER)}"
    full = {"final": str(paths.final), "partial": str(paths.partial), "manifest": str(paths.manifest)}
    timeout = transport.settings.command_timeout + reads / SLOWEST_READ
    body = json.dumps({**full, **request}).encode()
    result = transport.run(command, stdin=body, timeout=timeout, idempotent=idempotent)
    section = next((s for s in split_sections(result.stdout) if s.name == "upload"), None)
    try:
        data: dict[str, Any] = json.loads("\n".join(section.lines)) if section is not None else {}
    except json.JSONDecodeError:
        data = {}
    problem = data.get("error") or (
        "" if data else f"no answer (exit {result.exit_code}: {' '.join(result.stderr.split())[-200:]})"
    )
    if problem:
        raise TransferError(
            f"The upload step {request['op']!r} into {paths.final} on {transport.host} failed: {problem}; "
            f"check that {python} runs there with xxhash, and the folder's permissions and free space.",
            host=transport.host,
            path=paths.final,
        )
    return data


def _facts(data: Mapping[str, Any]) -> dict[str, FileFacts]:
    return {name: FileFacts(int(size), digest) for name, (size, digest) in data.items()}

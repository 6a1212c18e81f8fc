"""What an upload sends, and how an existing session differs from the one being uploaded (pure).

An upload of a session's raw data goes into a partial folder beside ``raw_data`` and keeps a manifest of
the files the server has hashed and found identical. After an interruption, :func:`plan_upload` decides
from the local files, the manifest and what the partial folder holds which files are already there
(verified), which can be completed from where they stop (their first bytes are right), and which are
sent whole. :func:`compare_sessions` tells an identical existing session from a different one and
:func:`describe_difference` says how in one clause.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FileFacts:
    """A file's size and XXH3-128 digest (hex); the digest may cover only its first bytes (a prefix)."""

    size: int
    digest: str | None = None


@dataclass(frozen=True)
class UploadPlan:
    """The files of one upload run, by relative POSIX path.

    Attributes:
        verified: already on the server, hashed and identical: not sent again.
        unconfirmed: complete on the server but not yet hashed there: the server hashes them again.
        resume: sent from this offset on (the server's copy is a correct prefix of the local file).
        send: sent whole.
        extra: files of the partial folder that the local session does not have (left by an earlier,
            different upload): removed before the folder is moved into place.
    """

    verified: tuple[str, ...] = ()
    unconfirmed: tuple[str, ...] = ()
    resume: Mapping[str, int] = field(default_factory=dict)
    send: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()

    def bytes_to_send(self, local: Mapping[str, FileFacts]) -> int:
        """How many bytes of file content this plan sends."""
        whole = sum(local[path].size for path in self.send)
        return whole + sum(local[path].size - offset for path, offset in self.resume.items())


@dataclass(frozen=True)
class SessionDifference:
    """How the session already on the server differs from the local one (data files only).

    Attributes:
        changed: files on both sides whose size or content differ.
        missing: local files the server's copy lacks.
        extra: files only the server's copy has.
    """

    changed: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()


def plan_upload(
    local: Mapping[str, FileFacts],
    manifest: Mapping[str, FileFacts],
    partial: Mapping[str, FileFacts],
    prefixes: Mapping[str, str] | None = None,
) -> UploadPlan:
    """Decides what to send.

    Args:
        local: every local data file with its size and digest.
        manifest: files the server verified earlier (size and digest at that time).
        partial: what the partial folder holds now: sizes, and the digest of the content present for
            files the manifest does not vouch for.
        prefixes: for files whose server copy is shorter than the local file, the local digest of as
            many first bytes as the server holds.
    """
    prefixes = prefixes or {}
    verified, unconfirmed, send = [], [], []
    resume: dict[str, int] = {}
    for path, facts in sorted(local.items()):
        there = partial.get(path)
        recorded = manifest.get(path)
        if there is not None and recorded == facts and there.size == facts.size:
            verified.append(path)
        elif there is not None and there.size == facts.size and there.digest == facts.digest:
            unconfirmed.append(path)
        elif there is not None and _is_prefix(there, facts, prefixes.get(path)):
            resume[path] = there.size
        else:
            send.append(path)
    extra = tuple(sorted(path for path in partial if path not in local))
    return UploadPlan(tuple(verified), tuple(unconfirmed), resume, tuple(send), extra)


def _is_prefix(there: FileFacts, facts: FileFacts, local_prefix: str | None) -> bool:
    """True when the server's shorter copy holds exactly the local file's first bytes."""
    return there.digest is not None and 0 < there.size < facts.size and local_prefix == there.digest


def prefix_candidates(
    local: Mapping[str, FileFacts], manifest: Mapping[str, FileFacts], partial: Mapping[str, FileFacts]
) -> dict[str, int]:
    """Files whose server copy is shorter than the local file and not vouched for: path → server size.

    Their local prefix of that many bytes is hashed and handed to :func:`plan_upload`.
    """
    return {
        path: there.size
        for path, there in partial.items()
        if path in local and path not in manifest and there.digest and 0 < there.size < local[path].size
    }


def compare_sessions(local: Mapping[str, FileFacts], existing: Mapping[str, FileFacts]) -> SessionDifference:
    """How ``existing`` (the server's data files, with digests) differs from ``local``; empty when equal."""
    changed = tuple(sorted(path for path in local if path in existing and existing[path] != local[path]))
    missing = tuple(sorted(path for path in local if path not in existing))
    extra = tuple(sorted(path for path in existing if path not in local))
    return SessionDifference(changed, missing, extra)


def is_identical(difference: SessionDifference) -> bool:
    """True when the two sessions hold the same data files with the same content."""
    return not (difference.changed or difference.missing or difference.extra)


def describe_difference(
    difference: SessionDifference,
    local: Mapping[str, FileFacts],
    existing: Mapping[str, FileFacts],
) -> str:
    """One clause naming the first difference and counting the rest, e.g. ``a.tif has different content
    (and 3 more files differ)``."""
    if difference.changed:
        path = difference.changed[0]
        first = (
            f"{path} has {existing[path].size} bytes there instead of {local[path].size}"
            if existing[path].size != local[path].size
            else f"{path} has different content there, by xxHash"
        )
    elif difference.missing:
        first = f"{difference.missing[0]} is missing there"
    else:
        first = f"{difference.extra[0]} is there but not in the local folder"
    more = len(difference.changed) + len(difference.missing) + len(difference.extra) - 1
    return first + (f" (and {more} more file{'s' if more > 1 else ''} differ)" if more else "")

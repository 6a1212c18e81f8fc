"""Data archiving's judgements of two copies, and the sentences that say which copy is complete.

Every message here ends with what to do, and none advises deleting an archive: an archive may hold
the only copy of files the working copy lacks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from sl_pipelines.errors import VerificationError, WorkerError
from sl_pipelines.workers.archive_record import record_path
from sl_pipelines.workers.files import fsync_folder, os_errors, summarise_failures
from sl_pipelines.workers.tree_copy import refuse_odd_entries
from sl_pipelines.workers.tree_delete import DeleteOutcome
from sl_pipelines.workers.tree_digest import TreeDigest, first_differences, hash_tree, list_tree

_LOG = logging.getLogger("sl_pipelines")


def check_working_within(source: Path, destination: Path, archived: TreeDigest) -> None:
    """Returns when every file of the working copy is in the archive, identical (or there is none).

    That is an interrupted archive (its delete was cut short) or an archive made earlier of the same
    data: deleting the working copy loses nothing.

    Raises:
        VerificationError: the working copy holds new or changed files; nothing was changed, and the
            message says which copy is complete.
        WorkerError: the working copy cannot be read or holds entries that are not files.
    """
    if not source.is_dir():
        return
    with os_errors("verify the working copy", source):
        listing = list_tree(source)
        refuse_odd_entries(source, listing)
        working = hash_tree(source, listing=listing)
    new_or_changed, missing = first_differences(archived.files, working.files)
    if not new_or_changed:
        _LOG.info(
            "Every file of %s is in the archive %s, identical: finishing its delete.", source, destination
        )
        return
    if not missing:
        message = (
            "Archived data differs from the working copy, which is complete and newer: "
            f"{source} holds every file of the archive {destination} and {len(new_or_changed)} new or "
            f"changed ones (first: {new_or_changed[0]}); nothing was deleted: move the old archive aside "
            "(it holds the older versions, do not delete it), then archive again."
        )
    else:
        message = (
            "Archived data differs from the working copy and neither is complete: the working copy "
            f"{source} has {len(new_or_changed)} new or changed files (first: {new_or_changed[0]}) and "
            f"lacks {len(missing)} files of the archive {destination} (first: {missing[0]}); nothing was "
            "deleted: keep both and merge them by hand."
        )
    raise VerificationError(message, path=destination)


def damaged_archive(
    source: Path, destination: Path, recorded: Mapping[str, str], archived: TreeDigest
) -> VerificationError:
    """The error for an archive that no longer matches the record written when it was verified."""
    changed, missing = first_differences(recorded, archived.files)
    first = (changed or missing)[0]
    if _matches(source, recorded):
        advice = (
            f"the working copy {source} is complete (it matches the record): move the archive aside, do not "
            "delete it, and archive again"
        )
    else:
        advice = "no copy is known to be complete: keep both and compare them by hand"
    return VerificationError(
        f"The archive no longer matches the record of its verification ({len(changed) + len(missing)} "
        f"files differ or are missing, first: {first}; archive {destination}, record "
        f"{record_path(destination).name}); nothing was deleted: {advice}.",
        path=destination,
    )


def _matches(folder: Path, recorded: Mapping[str, str]) -> bool:
    if not folder.is_dir():
        return False
    try:
        return dict(hash_tree(folder).files) == dict(recorded)
    except OSError:
        return False


def report_leftovers(
    source: Path, destination: Path, outcomes: Sequence[tuple[Path, DeleteOutcome]], verified: int
) -> None:
    """Raises when the verified delete left anything; files that appeared or changed go back in place.

    Raises:
        WorkerError: verified files could not be deleted (one sentence: the OS error, how many, the
            first); a re-run finishes them.
        VerificationError: files appeared or changed after the verification and were kept, or the
            working copy appeared again meanwhile.
    """
    failures = [(aside / relative, exc) for aside, outcome in outcomes for relative, exc in outcome.failures]
    if failures:
        summary = summarise_failures(failures, verified, "of the verified working copy could not be deleted")
        raise WorkerError(
            f"{summary}; the archive {destination} is complete and verified: fix the working volume, then "
            "archive again to finish."
        )
    kept = [(aside, relative) for aside, outcome in outcomes for relative in outcome.kept]
    if kept:
        where = _put_kept_back(source, sorted({aside for aside, _ in kept}))
        raise VerificationError(
            f"{len(kept)} files of the working copy appeared or changed after the archive was verified and "
            f"were kept in {where} (first: {kept[0][1]}); the archive {destination} holds the {verified} "
            "verified files but not these: stop what writes them, then merge them into the archive by hand.",
            path=where / kept[0][1],
        )
    if source.exists():
        raise VerificationError(
            f"The working copy {source} appeared again while the verified one was deleted; it was kept and "
            f"is not in the archive {destination}: stop what writes it, then merge it into the archive by "
            "hand.",
            path=source,
        )


def _put_kept_back(source: Path, asides: Sequence[Path]) -> Path:
    """Renames the one folder holding kept files back to the working copy's name, when that is free."""
    if len(asides) != 1 or source.exists():
        return asides[0]
    with os_errors("put the kept files back in", source):
        asides[0].rename(source)
        fsync_folder(source.parent)
    return source

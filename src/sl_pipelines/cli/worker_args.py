"""The argument parser of ``sl-worker``: its commands, options and help texts (no behaviour)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sl_pipelines.adapters.locks import LockKind
from sl_pipelines.workers.protocol import DEFAULT_GRACE

_MAX_MANAGER_ID = 2**64 - 1

_DESCRIPTION = """Server-side worker commands: each runs as one job of a pipeline run and reports into
the run's processing tracker (joins the run, works, records its completion, or its failure with a
one-line reason, before it exits). SIGTERM (Slurm time limit, scancel) and Ctrl-C are recorded as
failures too.

commands:
  checksum  verify the session's raw data against raw_data/ax_checksum.txt (xxHash3-128)
  prepare   copy the raw data to the working volume, verified, for processing
  archive   move the processed data to the storage volume, verified, then delete the working copy
  manifest  write <storage_root>/<project>/manifest.csv: the sessions and their pipeline states
  demo      stand in for a lab processing program: read raw files, write real results
  run       run any program (the lab's own) as a tracked job: sl-worker run [tracker options] -- CMD ARGS
  generate  write demo sessions (random raw data and its checksum); does not use a tracker

exit status: 0 on success, 1 when the work failed (one sentence on stderr; the failure is in the
tracker), 2 for bad arguments, 128+N after signal N (143 for SIGTERM)."""


def _manager_id(text: str) -> int:
    value = _integer(text)
    if not 0 <= value <= _MAX_MANAGER_ID:
        raise argparse.ArgumentTypeError(f"a manager id is an unsigned 64-bit integer, not {text}")
    return value


def _positive(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be zero or more seconds, not {text}")
    return value


def _tracker_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("tracker (filled in by the pipeline definition)")
    group.add_argument("--tracker", required=True, type=Path, metavar="PATH", help="the run's tracker file")
    group.add_argument(
        "--manager-id",
        required=True,
        type=_manager_id,
        metavar="N",
        help="the id of the manager that owns the run",
    )
    group.add_argument(
        "--job-count", required=True, type=_positive, metavar="N", help="how many jobs the run has"
    )
    group.add_argument("--job", required=True, metavar="NAME", help="this job's name in the run")
    group.add_argument(
        "--lock",
        choices=[kind.value for kind in LockKind],
        help="lock kind of the session's trackers: file (local disks) or soft (NFS); "
        "default from $SL_TRACKER_LOCK, else file",
    )
    group.add_argument(
        "--lock-timeout",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="seconds to wait for a tracker's lock before failing (default 10)",
    )
    parent.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")
    return parent


def _root_options(parent: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    group = parent.add_argument_group("session")
    group.add_argument(
        "--storage-root", required=True, type=Path, metavar="DIR", help="root of the storage volume"
    )
    group.add_argument(
        "--working-root", required=True, type=Path, metavar="DIR", help="root of the working volume"
    )
    group.add_argument("--project", required=True, help="the project's name")
    return group


def _session_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = _root_options(parent)
    group.add_argument("--animal", required=True, help="the animal's name")
    group.add_argument("--session", required=True, help="the session's name (spaces and symbols are fine)")
    return parent


def _add_demo(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    demo = commands.add_parser(
        "demo",
        parents=parents,
        help="stand in for a lab processing program",
        description="Read the session's raw files of one part and write real results into "
        "<working_root>/<project>/<animal>/<session>/processed_data/<pipeline>/<part>/. With --planes, "
        "binarize/plane/combine follow suite2p's order and refuse to run out of it.",
    )
    work = demo.add_argument_group("work")
    work.add_argument("--pipeline", required=True, help="the pipeline's short name (output folder)")
    work.add_argument("--part", required=True, help="the part: binarize, plane, combine, or any name")
    work.add_argument(
        "--inputs",
        nargs="+",
        action="extend",
        default=[],
        metavar="GLOB",
        help="raw files to read, as glob patterns relative to raw_data (repeatable)",
    )
    work.add_argument("--planes", type=_positive, metavar="N", help="number of imaging planes")
    work.add_argument("--plane", type=_integer, metavar="I", help="the plane of part 'plane' (0-based)")
    work.add_argument(
        "--memory-mb",
        type=_seconds,
        default=0.0,
        metavar="N",
        help="grow to N MB of resident memory and hold it while working (for resource-use tests)",
    )
    work.add_argument(
        "--cpu-seconds",
        type=_seconds,
        default=0.0,
        metavar="S",
        help="keep a CPU busy until the worker has used S seconds of CPU time in all",
    )
    _add_faults(demo.add_argument_group("fault injection (for tests)"))


def _add_faults(faults: argparse._ArgumentGroup) -> None:
    faults.add_argument(
        "--seconds", type=_seconds, default=0.0, metavar="S", help="pretend to work S seconds"
    )
    faults.add_argument(
        "--allocate-mb",
        type=_integer,
        default=0,
        metavar="MB",
        help="hold MB of memory (written, so really used) while working: a job asking for less runs "
        "out of memory",
    )
    faults.add_argument(
        "--until-attempt",
        type=_positive,
        metavar="N",
        help="apply --seconds and --allocate-mb only on attempts up to N (SL_ATTEMPT, set on retries); "
        "later attempts do the work at once",
    )
    faults.add_argument(
        "--fail",
        nargs="?",
        const="asked to fail with --fail",
        metavar="REASON",
        help="fail with REASON after the pretended work, writing nothing",
    )
    faults.add_argument(
        "--exit-code",
        type=_integer,
        metavar="N",
        help="exit with N whatever happened (default: 0 on success, 1 on failure)",
    )
    faults.add_argument(
        "--sleep-before-start",
        type=_seconds,
        default=0.0,
        metavar="S",
        help="sleep S seconds before touching the tracker (a kill then leaves no trace in it)",
    )
    faults.add_argument(
        "--no-report", action="store_true", help="do the work but exit 0 without recording the completion"
    )


def _add_generate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    generate = commands.add_parser(
        "generate",
        help="write demo sessions",
        description="Write demo sessions under <storage_root>/<project>/<animal>/<session>/raw_data: "
        "random behavior, camera and imaging files, session_data.yaml and the stored checksum.",
    )
    generate.add_argument(
        "--storage-root", required=True, type=Path, metavar="DIR", help="root of the storage volume"
    )
    generate.add_argument("--project", required=True, help="the project's name")
    generate.add_argument(
        "--animal", required=True, action="append", metavar="NAME", help="an animal (repeatable)"
    )
    generate.add_argument(
        "--session",
        action="append",
        default=[],
        metavar="NAME",
        help="a session name for every animal (repeatable)",
    )
    generate.add_argument(
        "--sessions-per-animal",
        type=_positive,
        default=1,
        metavar="N",
        help="sessions per animal without --session",
    )
    generate.add_argument(
        "--planes", type=_positive, default=3, metavar="N", help="imaging planes per session"
    )
    generate.add_argument(
        "--size-kb", type=_integer, default=64, metavar="KB", help="size of each behavior file"
    )
    generate.add_argument("--seed", type=_integer, default=0, help="random seed (same seed, same bytes)")
    generate.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``sl-worker``."""
    parser = argparse.ArgumentParser(
        prog="sl-worker", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    tracker, session = _tracker_options(), _session_options()
    _add_data_management(commands, tracker, session)
    _add_demo(commands, [tracker, session])
    _add_run(commands, tracker)
    _add_generate(commands)
    return parser


def _add_data_management(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    tracker: argparse.ArgumentParser,
    session: argparse.ArgumentParser,
) -> None:
    checksum = commands.add_parser(
        "checksum",
        parents=[tracker, session],
        help="verify raw data against its stored checksum",
        description="Hash the session's raw data (xxHash3-128 over sorted relative paths and contents) and "
        "compare it with raw_data/ax_checksum.txt; a mismatch or a missing checksum fails the job.",
    )
    checksum.add_argument(
        "--create-missing", action="store_true", help="store the checksum when none is stored yet"
    )
    checksum.add_argument(
        "--recalculate",
        action="store_true",
        help="store the checksum even when one is stored (overwrites it)",
    )
    commands.add_parser(
        "prepare",
        parents=[tracker, session],
        help="copy raw data to the working volume, verified",
        description="Copy raw_data from the storage volume to <working_root>/<project>/<animal>/<session>/"
        "raw_data, synced and verified against the stored checksum before it is put in place; removes the "
        "temporary folders of an interrupted run. Refuses while archiving or a processing pipeline runs on "
        "the session.",
    )
    commands.add_parser(
        "archive",
        parents=[tracker, session],
        help="move processed data to the storage volume, verified",
        description="Copy processed_data from the working volume to the storage volume, sync it and verify "
        "it file by file (processed_data.xxh128 beside it records the verified files), then move the working "
        "copy aside and delete exactly the verified files. A re-run finishes an interrupted archive. Refuses "
        "to overwrite an archive that differs, and refuses while preparation or a processing pipeline runs "
        "on the session.",
    )
    project = argparse.ArgumentParser(add_help=False)
    _root_options(project)
    commands.add_parser(
        "manifest",
        parents=[tracker, project],
        help="write the project's manifest",
        description="Write <storage_root>/<project>/manifest.csv: one row per session with its raw data, "
        "its working copy and the state of each pipeline (idle, running, succeeded, failed, corrupt).",
    )


def _add_run(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], tracker: argparse.ArgumentParser
) -> None:
    run = commands.add_parser(
        "run",
        parents=[tracker],
        help="run any program as a tracked job",
        usage="sl-worker run [tracker options] [--grace S] -- CMD [ARGS ...]",
        description="Run CMD ARGS (the lab's own program) inside the tracker protocol: a non-zero exit "
        "is recorded with its exit code and the last line of its stderr; SIGTERM is forwarded to it.",
    )
    run.add_argument(
        "--grace",
        type=_seconds,
        default=DEFAULT_GRACE,
        metavar="S",
        help="seconds a signalled program gets before SIGKILL",
    )
    run.add_argument(
        "program", nargs=argparse.REMAINDER, metavar="CMD", help="the program and its arguments, after --"
    )

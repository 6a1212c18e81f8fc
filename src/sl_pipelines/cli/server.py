"""``sl-server``: manage server profiles and check that a server is ready for pipelines.

::

    sl-server profile create NAME --host H --storage-root /s --working-root /w [--venv PATH | --conda ENV]
        [--partition P] [--account A] [--qos Q] [--gres G] [--password-prompt [--plaintext-password]]
    sl-server profile set NAME [--partition P] [--account A] [--qos Q] [--gres G] [--password-prompt ...]
    sl-server profile list | show NAME | delete NAME | check NAME | trust NAME [--yes]
    sl-server push LOCAL_SESSION_FOLDER --server P --project X --animal Y [--session NAME] [--then PIPELINE]

Exit status: 0 on success, 1 when something failed (one sentence on stderr), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from sl_pipelines.adapters import profiles
from sl_pipelines.adapters.profiles import AccountingChoice, ServerProfile
from sl_pipelines.cli import profile_options, push
from sl_pipelines.cli.consoles import make_console
from sl_pipelines.core.defaults_check import FACTS_COMMAND, check_job_defaults, parse_cluster_facts
from sl_pipelines.core.framing import MARKER, split_sections
from sl_pipelines.core.job import Environment, EnvironmentKind
from sl_pipelines.errors import ConfigurationError, SlPipelinesError

if TYPE_CHECKING:
    from sl_pipelines.adapters.server import Server

_log = logging.getLogger("sl_pipelines")


@dataclass(frozen=True)
class CheckRow:
    """One line of ``profile check``: what was checked, whether it works, and what was seen."""

    what: str
    ok: bool
    detail: str


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sl-server``; returns the exit status."""
    parser = _parser()
    try:
        arguments = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on bad arguments
        return int(exc.code or 0)
    out, err = make_console(), make_console(stderr=True)
    handler: Callable[[argparse.Namespace, Console], int] = arguments.handler
    try:
        return handler(arguments, out)
    except ConfigurationError as exc:
        err.print(Text(f"error: {exc}", style="red"))
        return 2 if exc.path is None and exc.key is not None else 1
    except SlPipelinesError as exc:
        err.print(Text(f"error: {exc}", style="red"))
        return 1
    except KeyboardInterrupt:
        err.print(Text("interrupted", style="red"))
        return 1


_DESCRIPTION = """Manage server profiles: how to reach a Slurm server over SSH and where things live on it.

Profiles are YAML files (mode 0600) in the user config folder, or in $SL_PIPELINES_CONFIG_DIR.
~/.ssh/config is honoured (HostName, User, Port, IdentityFile, ProxyJump); authentication tries the
key file, then ssh-agent, then a stored password. Unknown host keys are refused until you trust them
with 'sl-server profile trust NAME' (recorded in the profile's --known-hosts file, else in
~/.ssh/known_hosts, as ssh does); a changed host key is always refused. A password asked with
--password-prompt goes to the OS keyring (pip install 'sl-pipelines[keyring]'); it is written into the
profile file (0600) only with --plaintext-password. --partition, --account, --qos and --gres are given to
every job whose pipeline definition leaves them unset.

typical use:
  sl-server profile create lab --host hpc.example.org --user me --key-file ~/.ssh/id_ed25519 \\
      --storage-root /storage/lab --working-root /scratch/lab --venv /home/me/envs/sl
  sl-server profile trust lab
  sl-server profile check lab
  sl-server push /data/2026-01-05-10-00-00 --server lab --project sun --animal A1 --then checksum

exit status: 0 on success, 1 when something failed (one sentence on stderr), 2 for bad arguments."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sl-server", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    groups = parser.add_subparsers(dest="group", required=True)
    profile = groups.add_parser("profile", help="create, inspect, check and trust server profiles")
    commands = profile.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create (or with --force replace) a profile")
    create.add_argument("name", help="the profile's name (letters, digits, '.', '_', '-')")
    create.add_argument("--host", required=True, help="host name, address or ~/.ssh/config alias")
    create.add_argument("--port", type=int, help="SSH port (default: from ~/.ssh/config, else 22)")
    create.add_argument("--user", help="login name (default: from ~/.ssh/config, else your user name)")
    create.add_argument("--key-file", type=Path, help="private key to try first")
    create.add_argument("--no-agent", action="store_true", help="do not try ssh-agent keys")
    profile_options.password_options(create)
    create.add_argument(
        "--known-hosts",
        type=Path,
        help="an extra known_hosts file, where 'trust' records the host key (default: ~/.ssh/known_hosts)",
    )
    create.add_argument(
        "--storage-root", required=True, type=PurePosixPath, help="slow volume: raw data and trackers"
    )
    create.add_argument(
        "--working-root",
        required=True,
        type=PurePosixPath,
        help="fast volume: processing output and job folders",
    )
    where = create.add_mutually_exclusive_group()
    where.add_argument("--venv", help="server-side venv with sl-tracker and sl-worker")
    where.add_argument("--conda", help="server-side conda environment with sl-tracker and sl-worker")
    create.add_argument(
        "--module", action="append", default=[], help="environment module to load (repeatable)"
    )
    create.add_argument(
        "--accounting",
        choices=[c.value for c in AccountingChoice],
        default="auto",
        help="how finished jobs are looked up: auto-detect (default), sacct, or scontrol (no accounting)",
    )
    profile_options.defaults_options(create)
    create.add_argument("--force", action="store_true", help="replace an existing profile")
    create.set_defaults(handler=_create)
    edit = commands.add_parser("set", help="change a profile's job defaults or its password")
    edit.add_argument("name")
    profile_options.defaults_options(edit, clearing=True)
    profile_options.password_options(edit)
    edit.add_argument(
        "--notify",
        action="append",
        metavar="URL",
        help="where run notifications go by default: a webhook URL or mailto:address (repeatable; "
        "replaces the list; '' empties it)",
    )
    edit.set_defaults(handler=profile_options.set_profile)
    commands.add_parser("list", help="list the profiles").set_defaults(handler=_list)
    for name, handler, summary in (
        ("show", _show, "show a profile (the password is masked)"),
        ("delete", _delete, "delete a profile"),
        ("check", _check, "connect and check Slurm, accounting, roots and the environment"),
        ("trust", _trust, "show the server's host key and record it (profile's known_hosts, else ~/.ssh/)"),
    ):
        command = commands.add_parser(name, help=summary)
        command.add_argument("name")
        if name == "trust":
            command.add_argument("--yes", action="store_true", help="record the key without asking")
        command.set_defaults(handler=handler)
    push.add_parser(groups)
    return parser


def _create(arguments: argparse.Namespace, out: Console) -> int:
    environment = Environment(modules=tuple(arguments.module))
    if arguments.venv:
        environment = Environment(EnvironmentKind.VENV, arguments.venv, tuple(arguments.module))
    elif arguments.conda:
        environment = Environment(EnvironmentKind.CONDA, arguments.conda, tuple(arguments.module))
    elif arguments.module:
        environment = Environment(EnvironmentKind.MODULES, "", tuple(arguments.module))
    secret = profile_options.asked_password(arguments, arguments.host)
    profile = ServerProfile(
        name=arguments.name,
        host=arguments.host,
        port=arguments.port,
        user=arguments.user,
        key_file=arguments.key_file.expanduser() if arguments.key_file else None,
        use_agent=not arguments.no_agent,
        known_hosts=arguments.known_hosts.expanduser() if arguments.known_hosts else None,
        storage_root=arguments.storage_root,
        working_root=arguments.working_root,
        environment=environment,
        accounting=AccountingChoice(arguments.accounting),
        partition=arguments.partition,
        account=arguments.account,
        qos=arguments.qos,
        gres=arguments.gres,
        **secret,  # type: ignore[arg-type]
    )
    path = profiles.save_profile(profile, overwrite=arguments.force)
    out.print(
        f"Saved profile [bold]{profile.name}[/] to {path}; "
        f"check it with 'sl-server profile check {profile.name}'."
    )
    return 0


def _list(arguments: argparse.Namespace, out: Console) -> int:
    table = Table("profile", "host", "user", "storage root", "working root")
    for name in profiles.list_profiles():
        try:
            p = profiles.load_profile(name, with_password=False)
        except ConfigurationError as exc:
            table.add_row(name, Text(str(exc), style="red"), "", "", "")
            continue
        host = p.host if p.port is None else f"{p.host}:{p.port}"
        table.add_row(p.name, host, p.user or "", str(p.storage_root), str(p.working_root))
    if not table.row_count:
        out.print(f"No profiles in {profiles.profiles_dir()}; create one with 'sl-server profile create'.")
        return 0
    out.print(table)
    return 0


def _show(arguments: argparse.Namespace, out: Console) -> int:
    profile = profiles.load_profile(arguments.name, with_password=False)
    table = Table("key", "value", title=f"{profile.name} ({profiles.profile_path(profile.name)})")
    for key, value in profile.to_mapping().items():
        shown = ("********" if value else "(none)") if key == "password" else str(value)
        if key == "password" and profile.password_in_keyring:
            shown = "(in the OS keyring)"
        table.add_row(key, shown)
    out.print(table)
    return 0


def _delete(arguments: argparse.Namespace, out: Console) -> int:
    profiles.delete_profile(arguments.name)
    out.print(f"Deleted profile {arguments.name}.")
    return 0


def _check(arguments: argparse.Namespace, out: Console) -> int:
    from sl_pipelines.adapters.server import Server  # noqa: PLC0415 - paramiko only for commands that connect

    profile = profiles.load_profile(arguments.name)
    rows: list[CheckRow] = []
    with Server(profile) as server:
        try:
            server.transport.connect()
            rows.append(
                CheckRow(
                    "connect", True, f"{server.transport.endpoint.user}@{server.transport.endpoint.hostname}"
                )
            )
        except SlPipelinesError as exc:
            rows.append(CheckRow("connect", False, str(exc)))
        else:
            rows += _server_checks(server)
    table = Table("check", "result", "detail", title=f"profile {profile.name}")
    for row in rows:
        table.add_row(
            row.what, Text("ok" if row.ok else "FAILED", style="green" if row.ok else "red"), row.detail
        )
    out.print(table)
    return 0 if all(row.ok for row in rows) else 1


def _server_checks(server: Server) -> list[CheckRow]:
    rows = [_command_row(server, "slurm (sinfo)", "sinfo -h -o '%P %a %D %t'")]
    try:
        rows.append(CheckRow("accounting", True, f"finished jobs via {server.accounting_mode.value}"))
    except SlPipelinesError as exc:
        rows.append(CheckRow("accounting", False, str(exc)))
    for label, root in (("storage root", server.storage_root), ("working root", server.working_root)):
        quoted = shlex.quote(str(root))
        probe = f"test -d {quoted} && test -w {quoted} && echo writable"
        rows.append(_command_row(server, f"{label} {root}", probe, expect="writable"))
    rows.append(_tracker_row(server))
    if server.job_defaults.items():
        rows += _defaults_rows(server)
    return rows


def _defaults_rows(server: Server) -> list[CheckRow]:
    """One row per job default the profile sets: verified with sinfo, sacctmgr or sshare in one command."""
    try:
        facts = parse_cluster_facts(server.run(FACTS_COMMAND, timeout=30).stdout)
    except SlPipelinesError as exc:
        return [CheckRow("job defaults", False, str(exc))]
    rows = []
    for finding in check_job_defaults(server.job_defaults, facts, server.name):
        label = f"{finding.option} {finding.value}"
        detail = finding.detail if finding.ok is not None else f"unverified: {finding.detail}"
        rows.append(CheckRow(label, finding.ok is not False, detail))
    return rows


def _command_row(server: Server, what: str, command: str, expect: str = "") -> CheckRow:
    """Runs one check; only what the command printed between marker lines counts (not a login banner)."""
    framed = f"echo '{MARKER} begin check'; {command}; echo \"{MARKER} end $?\""
    try:
        result = server.run(framed, timeout=30)
    except SlPipelinesError as exc:
        return CheckRow(what, False, str(exc))
    section = next((s for s in split_sections(result.stdout) if s.name == "check"), None)
    output = "\n".join(section.lines) if section is not None else ""
    ok = section is not None and section.ok and expect in output
    detail = " ".join((output if ok else result.stderr or output or "missing or not writable").split())
    return CheckRow(what, ok, detail[:200])


def _tracker_row(server: Server) -> CheckRow:
    try:
        result = server.check_tracker_command()
    except SlPipelinesError as exc:
        return CheckRow("sl-tracker in environment", False, str(exc))
    ok = result.ok and "@@SLP@@ result" in result.stdout
    detail = "runs" if ok else " ".join((result.stderr or result.stdout).split())[:200] or "no answer"
    return CheckRow("sl-tracker in environment", ok, detail)


def _trust(arguments: argparse.Namespace, out: Console) -> int:
    """Shows the server's host key and records it, as ssh does on a first connection; never a changed key."""
    from sl_pipelines.adapters import ssh  # noqa: PLC0415 - paramiko only for commands that connect
    from sl_pipelines.adapters.server import settings_from_profile  # noqa: PLC0415

    profile = profiles.load_profile(arguments.name)
    settings = settings_from_profile(profile)
    name, key = ssh.fetch_host_key(settings)
    out.print(f"{name} offers {key.get_name()} key {ssh.fingerprint(key)}", markup=False)
    found = ssh.recorded_key(settings, name, key)
    if found is not None and found[1].asbytes() == key.asbytes():
        out.print(f"This key is already trusted (in {found[0]}); nothing to record.", markup=False)
        return 0
    if found is not None:
        raise ssh.changed_key_refusal(name, found[0], found[1], key)
    target = ssh.trust_target(settings)
    if not arguments.yes and not _confirmed(f"Record this key as trusted in {target}? [y/N] ", profile.name):
        out.print("Nothing recorded.")
        return 1
    ssh.record_host_key(target, name, key)
    out.print(f"Recorded {name} {key.get_name()} {ssh.fingerprint(key)} in {target}.", markup=False)
    return 0


def _confirmed(question: str, profile: str) -> bool:
    """Asks on the terminal; without one there is nobody to ask, so the user must pass ``--yes``."""
    if not sys.stdin.isatty():
        raise ConfigurationError(
            "Nothing recorded: there is no terminal to confirm the host key on; compare the fingerprint "
            f"above with the one the server's administrator gives you, then run 'sl-server profile trust "
            f"{profile} --yes'.",
            key="yes",
        )
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:
        return False


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

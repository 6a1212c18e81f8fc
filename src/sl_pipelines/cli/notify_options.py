"""``--notify URL`` and ``--stall NAME=VALUE`` of ``sl-process`` (one pipeline and workflows).

Targets come from ``--notify`` (repeatable), else from the server profile's ``notify:`` list; without
either nothing is sent. E-mail goes through the profile's ``smtp:`` settings (a local relay on port 25
when there are none); the SMTP password comes from its 0600 file or the OS keyring.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from sl_pipelines.adapters.notify import Notifier, SmtpSettings, read_password_file
from sl_pipelines.core.notify_text import TargetKind, parse_target
from sl_pipelines.core.stalls import THRESHOLD_NAMES, StallThresholds
from sl_pipelines.errors import ConfigurationError
from sl_pipelines.orchestration.run_notices import RunNotices


def add_notify_options(parser: argparse.ArgumentParser) -> None:
    """Adds --notify and --stall."""
    parser.add_argument(
        "--notify",
        action="append",
        default=[],
        metavar="URL",
        help="tell this webhook (https://…, Slack/Mattermost JSON) or mailto:address when a pipeline fails, "
        "stalls, and when the run ends (repeatable; default: the profile's notify list)",
    )
    parser.add_argument(
        "--stall",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"a stall threshold ({', '.join(THRESHOLD_NAMES)}; beats the pipeline YAML's stalls:)",
    )


def stall_overrides(args: argparse.Namespace) -> dict[str, float | None]:
    """The --stall values, checked.

    Raises:
        ConfigurationError: not NAME=VALUE, an unknown name, or a value out of range.
    """
    overrides: dict[str, float | None] = {}
    for item in args.stall:
        name, sep, value = item.partition("=")
        try:
            overrides[name.strip()] = float(value)
            StallThresholds().with_overrides(overrides)
        except ValueError as exc:
            detail = "it is not NAME=VALUE" if not sep else str(exc)
            raise ConfigurationError(
                f"--stall {item!r}: {detail}; for example --stall limit_fraction=0.9.", key="stall"
            ) from exc
    return overrides


def build_notices(args: argparse.Namespace, where: str) -> RunNotices | None:
    """The notices of this run, or None when nothing is to be sent.

    Raises:
        ConfigurationError: a target is malformed, or the profile's SMTP password cannot be had.
    """
    texts = list(args.notify)
    smtp = SmtpSettings()
    profile_name = args.server if args.server and args.server != "local" else None
    if profile_name is not None:
        from sl_pipelines.adapters.profiles import load_profile  # noqa: PLC0415 - only with --server

        profile = load_profile(profile_name, with_password=False)
        texts = texts or list(profile.notify)
        smtp = profile.smtp or smtp
    targets = [parse_target(text) for text in texts if text.strip()]
    if not targets:
        return None
    if any(target.kind is TargetKind.MAIL for target in targets) and smtp.user:
        smtp = replace(smtp, password=_smtp_password(smtp, profile_name))
    return RunNotices(Notifier(targets, smtp), where)


def _smtp_password(smtp: SmtpSettings, profile: str | None) -> str | None:
    if smtp.password_file is not None:
        return read_password_file(smtp.password_file)
    if smtp.password_in_keyring and profile is not None:
        from sl_pipelines.adapters import keyring_store  # noqa: PLC0415

        return keyring_store.fetch_smtp_password(profile)
    return None

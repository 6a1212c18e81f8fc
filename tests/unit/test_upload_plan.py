"""What an upload sends after an interruption, and how an existing session differs (pure tables)."""

from __future__ import annotations

import pytest

from sl_pipelines.core.upload_plan import (
    FileFacts,
    SessionDifference,
    compare_sessions,
    describe_difference,
    is_identical,
    plan_upload,
    prefix_candidates,
)

LOCAL = {
    "a.bin": FileFacts(100, "aa"),
    "b.bin": FileFacts(200, "bb"),
    "c.bin": FileFacts(300, "cc"),
    "d/e.txt": FileFacts(10, "ee"),
}


def test_a_fresh_upload_sends_everything() -> None:
    plan = plan_upload(LOCAL, {}, {})
    assert plan.send == ("a.bin", "b.bin", "c.bin", "d/e.txt")
    assert (plan.verified, plan.unconfirmed, dict(plan.resume), plan.extra) == ((), (), {}, ())
    assert plan.bytes_to_send(LOCAL) == 610


def test_a_resumed_upload_skips_verified_files_confirms_complete_ones_and_completes_a_cut_one() -> None:
    manifest = {"a.bin": FileFacts(100, "aa")}
    partial = {
        "a.bin": FileFacts(100),  # vouched for by the manifest: not hashed again
        "b.bin": FileFacts(200, "bb"),  # complete but never recorded: the server hashes it
        "c.bin": FileFacts(120, "c-prefix"),  # cut short, its first 120 bytes are right
        "old.bin": FileFacts(5, "zz"),  # left by an earlier, different upload
    }
    candidates = prefix_candidates(LOCAL, manifest, partial)
    assert candidates == {"c.bin": 120}
    plan = plan_upload(LOCAL, manifest, partial, {"c.bin": "c-prefix"})
    assert plan.verified == ("a.bin",)
    assert plan.unconfirmed == ("b.bin",)
    assert dict(plan.resume) == {"c.bin": 120}
    assert plan.send == ("d/e.txt",)
    assert plan.extra == ("old.bin",)
    assert plan.bytes_to_send(LOCAL) == 180 + 10


@pytest.mark.parametrize(
    ("manifest", "there", "prefix", "decision"),
    [
        ({"c.bin": FileFacts(300, "other")}, FileFacts(300), None, "send"),  # verified, but another file
        ({"c.bin": FileFacts(300, "cc")}, FileFacts(299), None, "send"),  # verified, then cut: size differs
        ({}, FileFacts(300, "wrong"), None, "send"),  # complete size, wrong content
        ({}, FileFacts(120, "p"), "not-p", "send"),  # cut short with wrong first bytes
        ({}, FileFacts(400, "cc"), None, "send"),  # longer than the local file
        ({}, FileFacts(0, "empty"), None, "send"),  # nothing to keep
        ({}, FileFacts(120, "p"), "p", "resume"),
        ({"c.bin": FileFacts(300, "cc")}, FileFacts(300), None, "verified"),
    ],
)
def test_what_becomes_of_one_file(
    manifest: dict[str, FileFacts], there: FileFacts, prefix: str | None, decision: str
) -> None:
    prefixes = {"c.bin": prefix} if prefix is not None else {}
    plan = plan_upload({"c.bin": LOCAL["c.bin"]}, manifest, {"c.bin": there}, prefixes)
    found = {
        "send": plan.send,
        "resume": tuple(plan.resume),
        "verified": plan.verified,
        "unconfirmed": plan.unconfirmed,
    }
    assert found[decision] == ("c.bin",)
    assert sum(len(value) for value in found.values()) == 1


def test_an_identical_session_has_no_difference() -> None:
    difference = compare_sessions(LOCAL, dict(LOCAL))
    assert is_identical(difference)
    assert difference == SessionDifference()


@pytest.mark.parametrize(
    ("existing", "clause"),
    [
        ({**LOCAL, "b.bin": FileFacts(200, "xx")}, "b.bin has different content there, by xxHash"),
        ({**LOCAL, "b.bin": FileFacts(7, "xx")}, "b.bin has 7 bytes there instead of 200"),
        ({k: v for k, v in LOCAL.items() if k != "c.bin"}, "c.bin is missing there"),
        ({**LOCAL, "z.bin": FileFacts(1, "z")}, "z.bin is there but not in the local folder"),
        (
            {"a.bin": FileFacts(100, "no"), "b.bin": FileFacts(200, "no")},
            "a.bin has different content there, by xxHash (and 3 more files differ)",
        ),
    ],
)
def test_a_difference_is_named_in_one_clause(existing: dict[str, FileFacts], clause: str) -> None:
    difference = compare_sessions(LOCAL, existing)
    assert not is_identical(difference)
    assert describe_difference(difference, LOCAL, existing) == clause

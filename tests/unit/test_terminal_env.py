"""``vbdecl exec -t``: TERM set for the new terminal only where the command would have none, and
the terminal given to the command's ids as the host knows them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vbdecl.runtime.terminal import outside_ids, with_term


@pytest.mark.parametrize(("proc", "caller", "term"), [
    ({}, "screen", None),                                   # inherited from the caller as it is
    ({}, None, "xterm"),                                    # a caller without one: docker's default
    ({"clear_env": True}, "screen", "screen"),              # nothing inherited: the caller's
    ({"clear_env": True}, None, "xterm"),
    ({"env": {"TERM": "linux"}}, "screen", "linux"),        # the manifest's own
    ({"unset_env": ["TERM"]}, "screen", None),              # unset on purpose: kept so
    ({"clear_env": True, "unset_env": ["TERM"]}, None, None),
])
def test_term_is_added_only_where_the_command_would_have_none(
        monkeypatch: pytest.MonkeyPatch, proc: dict[str, object], caller: str | None, term: str | None) -> None:
    if caller is None:
        monkeypatch.delenv("TERM", raising=False)
    else:
        monkeypatch.setenv("TERM", caller)
    env = with_term(proc)
    assert env.get("TERM") == term
    assert proc.get("env") in (None, {"TERM": "linux"})      # the spec's own mapping untouched


@pytest.mark.parametrize(("uid_map", "ids", "outside"), [
    ("0 0 4294967295\n", (1000, 1000), (1000, 1000)),          # no user namespace of its own
    ("0 0 4294967295\n", (0, 0), None),                        # root's already: nothing to give
    ("0 200000 65536\n", (0, 0), (200000, 200000)),            # root inside is someone on the host
    ("0 200000 65536\n", (1000, 5), (201000, 200005)),
    ("0 1000 1\n1 100000 65536\n", (1, 1), (100000, 100000)),  # the second range
    ("0 200000 65536\n", (70000, 0), None),                    # not mapped: left as it is
])
def test_the_terminal_goes_to_the_command_s_ids_as_the_host_knows_them(
        tmp_path: Path, uid_map: str, ids: tuple[int, int], outside: tuple[int, int] | None) -> None:
    for name in ("uid_map", "gid_map"):
        (tmp_path / name).write_text(uid_map)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert outside_ids(fd, *ids) == outside
    finally:
        os.close(fd)

"""``vbdecl exec -t``'s TERM: set for the new terminal only where the command would have none."""

from __future__ import annotations

import pytest

from vbdecl.runtime.terminal import with_term


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

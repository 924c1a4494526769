"""fmt.command quotes exactly as shlex does, without importing it for plain words."""

from __future__ import annotations

import shlex

import pytest

from vbdecl.plan import fmt


@pytest.mark.parametrize("argv", [
    ["/usr/bin/true"], ["/bin/sh", "-c", "echo hi"], ["a", "b=c", "x@y:1,2/3%+-_."], [""],
    ["caf\u00e9"], ["a$b"], ["it's"], ["tab\there"], ["*"], ["~"], ["a\nb"],
])
def test_command_matches_shlex(argv: list[str]) -> None:
    assert fmt.command(argv) == " ".join(shlex.quote(a) for a in argv)


def test_no_command_is_the_default_shell() -> None:
    assert fmt.command(None) == fmt.command([]) == "/bin/sh"

"""Landlock masks per ABI and the best-effort policy (no root)."""

from __future__ import annotations

import pytest

from vbdecl.errors import RuntimeSetupError
from vbdecl.ops import sec
from vbdecl.sys import landlock as ll


def test_fs_rights_per_abi() -> None:
    assert ll.fs_rights(0) == 0
    assert ll.fs_rights(1) == (1 << 13) - 1
    assert ll.fs_rights(2) == ll.fs_rights(1) | ll.REFER
    assert ll.fs_rights(3) == ll.fs_rights(2) | ll.TRUNCATE
    assert ll.fs_rights(4) == ll.fs_rights(3)
    assert ll.fs_rights(5) == ll.fs_rights(3) | ll.IOCTL_DEV
    assert ll.fs_rights(7) == ll.fs_rights(5)
    assert ll.net_rights(3) == 0 and ll.net_rights(4) == ll.BIND_TCP | ll.CONNECT_TCP
    assert ll.scopes(5) == 0 and ll.scopes(6) == ll.SCOPE_ABSTRACT_UNIX_SOCKET | ll.SCOPE_SIGNAL
    assert ll.FILE_RIGHTS & ll.READ_DIR == 0 and ll.FILE_RIGHTS & ll.MAKE_REG == 0


def test_no_landlock_is_an_error_unless_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ll, "abi_version", lambda: 0)
    with pytest.raises(RuntimeSetupError, match="Landlock is not available"):
        sec.landlock_ruleset({"read": ["/usr"], "optional": False})
    sec.WARNINGS.clear()
    assert sec.landlock_ruleset({"read": ["/usr"], "optional": True}) is None
    assert "skipped" in sec.WARNINGS[-1]


def test_ports_need_abi_4(monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[tuple[int, int, int]] = []
    monkeypatch.setattr(ll, "abi_version", lambda: 3)
    monkeypatch.setattr(ll, "create_ruleset", lambda f, n=0, s=0: created.append((f, n, s)) or 99)
    monkeypatch.setattr(ll, "add_path_rule", lambda fd, p, a, opener=None, where="": a)
    with pytest.raises(RuntimeSetupError, match="port rules need ABI 4"):
        sec.landlock_ruleset({"read": ["/usr"], "ports": {"bind": [80]}})
    sec.WARNINGS.clear()
    assert sec.landlock_ruleset({"read": ["/usr"], "ports": {"bind": [80]}, "optional": True}) == 99
    assert "no port rules" in sec.WARNINGS[-1]
    assert created[-1] == (ll.fs_rights(3), 0, 0)    # every fs right of ABI 3 is handled

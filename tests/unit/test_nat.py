"""What NAT changes of the host's sysctls is saved before it is changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vbdecl.ops import nat
from vbdecl.sys import netlink


class Killed(BaseException):
    """vbdecl killed right after the sysctl was written."""


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {netlink.FORWARD["4"]: "0", nat._localnet_path("nrbr0"): "0"}

    def sysctl_set(key: str, value: str) -> None:
        values[key] = value
        raise Killed

    monkeypatch.setattr(nat, "HOST_DIR", str(tmp_path))
    monkeypatch.setattr(netlink, "sysctl_get", values.__getitem__)
    monkeypatch.setattr(netlink, "sysctl_set", sysctl_set)
    return values


def _saved(tmp_path: Path) -> Any:
    return json.loads((tmp_path / "nat.json").read_text())


def test_forwarding_is_saved_before_it_is_turned_on(host: dict[str, str], tmp_path: Path) -> None:
    """A review SIGKILLed an apply right after it turned ip_forward on: the value from
    before was only in memory, and recovery left forwarding on for good."""
    with pytest.raises(Killed):
        nat._forward_on({"forward": {}}, ["4"])
    assert host[netlink.FORWARD["4"]] == "1"
    assert _saved(tmp_path)["forward"] == {"4": "0"}


def test_route_localnet_is_saved_before_it_is_turned_on(host: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(Killed):
        nat._localnet_on({"forward": {}}, "nrbr0", "inst-1")
    assert _saved(tmp_path)["localnet"] == {"nrbr0": {"saved": "0", "users": ["inst-1"]}}

"""Which host sockets a published port would take traffic from (vbdecl.ops.nat.catches)."""

from __future__ import annotations

import pytest

from vbdecl.ops.nat import catches


def sock(address: str, v6only: bool | None = None) -> dict[str, object]:
    return {"family": 6 if ":" in address else 4, "address": address, "port": 8080, "uid": 0,
            "inode": 1, "v6only": v6only}


@pytest.mark.parametrize(("listener", "host_ip", "fams", "taken"), [
    # published on every address: any IPv4 listener on the port
    (sock("0.0.0.0"), None, ["4"], True),
    (sock("10.231.99.1"), None, ["4"], True),
    (sock("127.0.0.1"), None, ["4"], True),
    # an IPv6 listener only when the environment has IPv6, unless it is dual-stack
    (sock("fd00::1"), None, ["4"], False),
    (sock("fd00::1"), None, ["4", "6"], True),
    (sock("::", v6only=True), None, ["4"], False),
    (sock("::", v6only=False), None, ["4"], True),
    (sock("::", v6only=None), None, ["4"], True),            # unknown (from /proc): dual-stack
    (sock("::ffff:10.231.99.1"), None, ["4"], True),
    # published on one address: that address or a wildcard
    (sock("10.231.99.1"), "10.231.99.1", ["4"], True),
    (sock("0.0.0.0"), "10.231.99.1", ["4"], True),
    (sock("10.231.99.2"), "10.231.99.1", ["4"], False),
    (sock("127.0.0.1"), "10.231.99.1", ["4"], False),
    (sock("::", v6only=False), "10.231.99.1", ["4"], True),
    (sock("::", v6only=True), "10.231.99.1", ["4"], False),
    (sock("::"), "fd00::1", ["4", "6"], True),
    (sock("fd00::1"), "fd00::1", ["4", "6"], True),
    (sock("fd00::2"), "fd00::1", ["4", "6"], False),
    (sock("0.0.0.0"), "fd00::1", ["4", "6"], False),
])
def test_catches(listener: dict[str, object], host_ip: str | None, fams: list[str], taken: bool) -> None:
    assert catches(listener, host_ip, fams) is taken

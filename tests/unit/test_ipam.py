"""Address management: pure, no root."""

from __future__ import annotations

import ipaddress

import pytest

from vbdecl.errors import ConflictError, VbdeclError
from vbdecl.net import ipam


@pytest.mark.parametrize(("addr", "plen", "want"), [
    ("10.88.0.5", 24, "10.88.0.255"),
    ("10.88.0.5", 16, "10.88.255.255"),
    ("192.168.1.130", 25, "192.168.1.255"),
    ("192.168.1.5", 30, "192.168.1.7"),
    ("172.16.5.4", 12, "172.31.255.255"),
    ("1.2.3.4", 8, "1.255.255.255"),
    ("255.255.255.254", 1, "255.255.255.255"),
    ("0.0.0.1", 0, "255.255.255.255"),
])
def test_broadcast_network_byte_order(addr: str, plen: int, want: str) -> None:
    assert ipam.broadcast4(addr, plen) == want
    # cross-check against the stdlib's network math
    assert want == str(ipaddress.ip_network(f"{addr}/{plen}", strict=False).broadcast_address)


@pytest.mark.parametrize("plen", [31, 32])
def test_no_broadcast_on_point_to_point(plen: int) -> None:
    assert ipam.broadcast4("10.0.0.1", plen) is None


def test_broadcast_rejects_bad_prefix() -> None:
    with pytest.raises(ValueError):
        ipam.broadcast4("10.0.0.1", 33)


def test_gateway_is_first_host() -> None:
    assert str(ipam.gateway(ipam.parse_subnet("10.88.0.0/24"))) == "10.88.0.1"
    assert str(ipam.gateway(ipam.parse_subnet("fd00:88::/64"))) == "fd00:88::1"
    with pytest.raises(VbdeclError, match="too small"):
        ipam.gateway(ipam.parse_subnet("10.0.0.0/31"))


def test_parse_subnet_rejects_host_bits() -> None:
    with pytest.raises(VbdeclError, match="invalid subnet"):
        ipam.parse_subnet("10.88.0.5/24")


def test_allocate_is_deterministic_and_in_range() -> None:
    net = ipam.parse_subnet("10.88.0.0/24")
    a = ipam.allocate(net, "vb-1a2b3c4d", [])
    assert a == ipam.allocate(net, "vb-1a2b3c4d", [])
    assert a in net and str(a) not in ("10.88.0.0", "10.88.0.1", "10.88.0.255")


def test_allocate_probes_past_collisions() -> None:
    net = ipam.parse_subnet("10.88.0.0/24")
    first = ipam.allocate(net, "vb-1a2b3c4d", [])
    second = ipam.allocate(net, "vb-1a2b3c4d", [str(first)])
    assert second != first
    assert int(second) == int(first) + 1 or str(second) == "10.88.0.2"
    # same inputs, same answer: collisions resolve deterministically
    assert second == ipam.allocate(net, "vb-1a2b3c4d", [str(first)])


def test_allocate_distinct_for_many_instances() -> None:
    net = ipam.parse_subnet("10.88.0.0/24")
    taken: list[str] = []
    for i in range(253):
        taken.append(str(ipam.allocate(net, f"vb-{i:08x}", taken)))
    assert len(set(taken)) == 253
    with pytest.raises(ipam.ExhaustedError, match="exhausted"):
        ipam.allocate(net, "vb-ffffffff", taken)


def test_allocate_small_subnet_exhausts() -> None:
    net = ipam.parse_subnet("10.9.0.0/30")     # .1 gateway, .2 the only host, .3 broadcast
    assert str(ipam.allocate(net, "vb-00000001", [])) == "10.9.0.2"
    with pytest.raises(ipam.ExhaustedError):
        ipam.allocate(net, "vb-00000002", ["10.9.0.2"])


def test_allocate_ipv6() -> None:
    net = ipam.parse_subnet("fd00:88::/64")
    a = ipam.allocate(net, "vb-1a2b3c4d", [])
    assert a.version == 6 and a in net and str(a) != "fd00:88::1"


def test_allocate_ignores_foreign_addresses() -> None:
    net = ipam.parse_subnet("10.88.0.0/24")
    a = ipam.allocate(net, "vb-1a2b3c4d", ["192.0.2.1", "fd00::1"])
    assert a == ipam.allocate(net, "vb-1a2b3c4d", [])


def test_explicit_checks() -> None:
    net = ipam.parse_subnet("10.88.0.0/24")
    assert str(ipam.check_explicit(net, "10.88.0.20", {}, "vb-1")) == "10.88.0.20"
    with pytest.raises(ConflictError, match="already in use by vb-2"):
        ipam.check_explicit(net, "10.88.0.20", {"10.88.0.20": "vb-2"}, "vb-1")
    # the holder itself may re-apply
    ipam.check_explicit(net, "10.88.0.20", {"10.88.0.20": "vb-1"}, "vb-1")
    with pytest.raises(VbdeclError, match="not in subnet"):
        ipam.check_explicit(net, "10.89.0.20", {}, "vb-1")
    with pytest.raises(VbdeclError, match="gateway"):
        ipam.check_explicit(net, "10.88.0.1", {}, "vb-1")
    with pytest.raises(VbdeclError, match="reserved"):
        ipam.check_explicit(net, "10.88.0.255", {}, "vb-1")
    with pytest.raises(VbdeclError, match="invalid address"):
        ipam.check_explicit(net, "10.88.0.x", {}, "vb-1")


def test_overlapping_route() -> None:
    net = ipam.parse_subnet("10.88.0.0/24")
    routes = [("0.0.0.0/0", "eth0"), ("192.0.2.0/24", "eth0"), ("10.88.0.0/24", "vbdecl0")]
    assert ipam.overlapping_route(net, routes, "vbdecl0") is None
    assert ipam.overlapping_route(net, [*routes, ("10.0.0.0/8", "eth1")], "vbdecl0") == ("10.0.0.0/8", "eth1")
    assert ipam.overlapping_route(net, [("10.88.0.128/25", "br1")], "vbdecl0") == ("10.88.0.128/25", "br1")
    assert ipam.overlapping_route(net, [("fd00::/8", "eth0")], "vbdecl0") is None


def test_ifnames() -> None:
    assert ipam.veth_name("vb-1a2b3c4d") == "vb1a2b3c4dh"
    assert len(ipam.veth_name("vb-1a2b3c4d")) <= 15
    with pytest.raises(VbdeclError, match="1 to 15"):
        ipam.check_ifname("a-bridge-name-too-long", "bridge")
    with pytest.raises(VbdeclError, match="1 to 15"):
        ipam.veth_name("vb-0123456789abcdef")
    with pytest.raises(VbdeclError):
        ipam.check_ifname("a/b")
    with pytest.raises(VbdeclError, match="reserved for vbdecl's address claims"):
        ipam.check_ifname("br@10.88.0.5", "bridge")
    assert ipam.check_ifname("eth@0") == "eth@0"     # a host's interface may have one

"""The egress of network.egress: auto is the IPv4 default route of /proc/net/route."""

from __future__ import annotations

from pathlib import Path

import pytest

from vbdecl.sys import netlink

HEADER = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"


def route(iface: str, dest: str, mask: str, flags: str = "0003", metric: int = 0) -> str:
    return f"{iface}\t{dest}\t010200C0\t{flags}\t0\t0\t{metric}\t{mask}\t0\t0\t0\n"


@pytest.mark.parametrize(("lines", "expected"), [
    ([route("eth0", "00000000", "00000000"), route("eth0", "000200C0", "00FFFFFF", "0001")], "eth0"),
    ([route("wlan0", "00000000", "00000000", metric=600), route("eth1", "00000000", "00000000", metric=100)],
     "eth1"),                                                    # the lowest metric wins
    ([route("*", "00000000", "00000000", flags="0201"), route("eth2", "00000000", "00000000", metric=5)],
     "eth2"),                                                    # unreachable/prohibit: no way out
    ([route("*", "00000000", "00000000", flags="0201")], None),
    ([route("eth0", "00000000", "00000000", flags="0203", metric=1)], None),   # RTF_REJECT
    ([route("eth0", "00000000", "00000000", metric=-16769024), route("eth1", "00000000", "00000000",
                                                                         metric=100)],
     "eth1"),                                                    # 4278198272 printed signed
    ([route("eth0", "000200C0", "00FFFFFF", "0001"), route("eth0", "00000000", "000000FF")], None),
    ([], None),
])
def test_default_route_from_proc(tmp_path: Path, lines: list[str], expected: str | None) -> None:
    path = tmp_path / "route"
    path.write_text(HEADER + "".join(lines))
    assert netlink.own_default_route_interface(str(path)) == expected


def test_proc_and_netlink_agree_here() -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        by_netlink = None
        for msg in ipr.get_routes(family=2, table=254):
            if msg["dst_len"] == 0 and msg.get_attr("RTA_OIF") is not None:
                by_netlink = ipr.get_links(msg.get_attr("RTA_OIF"))[0].get_attr("IFLA_IFNAME")
                break
        assert netlink.own_default_route_interface() == by_netlink == netlink.default_route_interface(ipr)

"""vbdecl.ops.net: what its bridge step says where it cannot go on."""

from __future__ import annotations

import pytest

from vbdecl.errors import ConflictError


def test_an_overlapping_ipv6_subnet_is_said_to_be_network_subnet6() -> None:
    """A network review: the IPv6 overlap's hint named network.subnet."""
    from vbdecl.net import ipam
    from vbdecl.ops.net import Bridge

    class Routes:
        AF_INET, AF_INET6 = 2, 10

        @staticmethod
        def routes(_ipr: object, family: int) -> list[tuple[str, str]]:
            return [("fd00:5::/64", "vbother0")] if family == 10 else [("10.5.0.0/24", "vbother0")]

    for subnet, key in (("fd00:5::/48", "network.subnet6"), ("10.5.0.0/16", "network.subnet)")):
        with pytest.raises(ConflictError) as err:
            Bridge._check_overlap(Routes, None, ipam.parse_subnet(subnet), "vbnew0")
        assert key in str(err.value.hint) and "overlaps the host route" in err.value.message

"""net.guard's nftables commands (pure): what leaves an environment's veth."""

from __future__ import annotations

from typing import Any

from vbdecl.ops import guard


def _rendered(expr: list[dict[str, Any]]) -> str:
    return repr(expr)


def test_the_rules_pin_the_mac_and_the_addresses() -> None:
    rules = guard.rules("02:00:00:00:00:01", "10.88.0.5", ["fd00::5", "fe80::1"])
    text = [_rendered(r) for r in rules]
    assert "'ether', 'field': 'saddr'" in text[1] and "02:00:00:00:00:01" in text[1]
    assert "saddr ether" in text[2]
    assert "['10.88.0.5', '0.0.0.0']" in text[3]
    assert "'ip', 'field': 'saddr'" in text[4] and "10.88.0.5" in text[4]
    assert "fd00::5" in text[5] and "fe80::1" in text[5] and "'::'" in text[5] and "prefix" not in text[5]
    assert "nd-neighbor-advert" in text[6] and "'frag'" in text[6]     # fragmented discovery
    assert "nd-router-advert" in text[7] and "nd-redirect" in text[7]
    # a neighbour advertisement only for its own addresses (hex: JSON integers are 64 bits)
    assert "0xfd000000000000000000000000000005" in text[8] and "0xfe800000000000000000000000000001" in text[8]
    assert all(r[-1] == {"drop": None} for r in rules)


def test_the_link_local_address_is_the_macs_eui64() -> None:
    assert guard.link_local("be:b4:37:12:04:fb") == "fe80::bcb4:37ff:fe12:4fb"


def test_without_an_ipv6_address_of_its_own_no_advertisement_passes() -> None:
    rules = guard.rules("02:00:00:00:00:01", "10.88.0.5", [])
    assert "fe80" not in repr(rules[5]) and "'::'" in repr(rules[5])
    assert rules[8] == [{"match": {"op": "==", "left": {"payload": {"protocol": "icmpv6", "field": "type"}},
                                   "right": "nd-neighbor-advert"}}, {"drop": None}]


def test_add_and_delete_name_the_instance_and_its_port() -> None:
    cmds = guard.add_commands("vb-1a2b3c4d", "vb1a2b3c4dh", "02:00:00:00:00:01", "10.88.0.5", [])
    assert cmds[0] == {"add": {"chain": {"family": "bridge", "table": "vbdecl", "name": "vb-1a2b3c4d-guard"}}}
    assert cmds[1] == {"flush": {"chain": {"family": "bridge", "table": "vbdecl", "name": "vb-1a2b3c4d-guard"}}}
    assert all(c["add"]["rule"]["comment"] == "vb-1a2b3c4d" for c in cmds[2:-1])
    element = cmds[-1]["add"]["element"]["elem"][0]
    assert element == [{"elem": {"val": "vb1a2b3c4dh", "comment": "vb-1a2b3c4d"}},
                       {"goto": {"target": "vb-1a2b3c4d-guard"}}]
    assert guard.delete_commands("vb-1a2b3c4d", ["vb1a2b3c4dh"], True) == [
        {"delete": {"element": {"family": "bridge", "table": "vbdecl", "name": "ports", "elem": ["vb1a2b3c4dh"]}}},
        {"flush": {"chain": {"family": "bridge", "table": "vbdecl", "name": "vb-1a2b3c4d-guard"}}},
        {"delete": {"chain": {"family": "bridge", "table": "vbdecl", "name": "vb-1a2b3c4d-guard"}}}]
    assert guard.delete_commands("vb-1a2b3c4d", [], False) == []


def _listing(*, map_: bool = True, chain: bool = True, hooked: int = 2) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if map_:
        items.append({"map": {"name": "ports", "elem": [
            [{"elem": {"val": "vb1h", "comment": "vb-1"}}, {"jump": {"target": "vb-1-guard"}}]]}})
    if chain:
        items.append({"chain": {"name": "prerouting"}})
    items += [{"rule": {"chain": "prerouting"}}] * hooked
    items += [{"chain": {"name": "vb-1-guard"}}, {"rule": {"chain": "vb-1-guard"}}, {"rule": {"chain": "vb-1-guard"}}]
    return items


def test_found_counts_the_rules_and_the_ports_that_jump_to_the_chain() -> None:
    assert guard._found(_listing(), "vb-1") == (2, ["vb1h"])
    assert guard._found(_listing(), "vb-2") == (None, [])
    assert guard._found(_listing(map_=False), "vb-1") == (2, [])


def test_the_base_is_repaired_without_touching_the_environments_chains() -> None:
    assert guard.base_repair_commands(_listing()) == []
    flushed = guard.base_repair_commands(_listing(hooked=1))
    assert [next(iter(c)) for c in flushed] == ["flush", "add", "add"]
    assert "vmap" in repr(flushed[1]) and "iifgroup" in repr(flushed[2])     # (no guard yet: dropped)
    rebuilt = guard.base_repair_commands(_listing(map_=False, chain=False, hooked=0))
    assert [next(iter(c["add"])) for c in rebuilt] == ["map", "chain", "rule", "rule"]
    assert not any("delete" in c for c in rebuilt)

"""net.guard's nftables commands (pure): what leaves an environment's veth."""

from __future__ import annotations

from typing import Any

from vbdecl.ops import guard


def _rendered(expr: list[dict[str, Any]]) -> str:
    return repr(expr)


def test_the_rules_pin_the_mac_and_the_addresses() -> None:
    rules = guard.rules("02:00:00:00:00:01", "10.88.0.5", "fd00::5")
    text = [_rendered(r) for r in rules]
    assert "'ether', 'field': 'saddr'" in text[1] and "02:00:00:00:00:01" in text[1]
    assert "saddr ether" in text[2]
    assert "['10.88.0.5', '0.0.0.0']" in text[3]
    assert "'ip', 'field': 'saddr'" in text[4] and "10.88.0.5" in text[4]
    assert "fd00::5" in text[5] and "fe80::" in text[5] and "'::'" in text[5]
    assert "nd-router-advert" in text[6] and "nd-redirect" in text[6]
    # a neighbour advertisement only for its own address (hex: JSON integers are 64 bits) or a link-local one
    assert "0xfd000000000000000000000000000005" in text[7] and "0xfe80" in text[7]
    assert all(r[-1] == {"drop": None} for r in rules)


def test_without_ipv6_only_link_local_sources_and_targets_pass() -> None:
    rules = guard.rules("02:00:00:00:00:01", "10.88.0.5", None)
    assert "fd00" not in repr(rules[5]) and "fe80::" in repr(rules[5])
    assert "'len': 128" not in repr(rules[7]) and "0xfe80" in repr(rules[7])


def test_add_and_delete_name_the_instance_and_its_port() -> None:
    cmds = guard.add_commands("vb-1a2b3c4d", "vb1a2b3c4dh", "02:00:00:00:00:01", "10.88.0.5", None)
    assert cmds[0] == {"add": {"chain": {"family": "bridge", "table": "vbdecl", "name": "vb-1a2b3c4d-guard"}}}
    assert cmds[1] == {"flush": {"chain": {"family": "bridge", "table": "vbdecl", "name": "vb-1a2b3c4d-guard"}}}
    assert all(c["add"]["rule"]["comment"] == "vb-1a2b3c4d" for c in cmds[2:-1])
    element = cmds[-1]["add"]["element"]["elem"][0]
    assert element == [{"elem": {"val": "vb1a2b3c4dh", "comment": "vb-1a2b3c4d"}},
                       {"jump": {"target": "vb-1a2b3c4d-guard"}}]
    assert guard.delete_commands("vb-1a2b3c4d", ["vb1a2b3c4dh"], True) == [
        {"delete": {"element": {"family": "bridge", "table": "vbdecl", "name": "ports", "elem": ["vb1a2b3c4dh"]}}},
        {"flush": {"chain": {"family": "bridge", "table": "vbdecl", "name": "vb-1a2b3c4d-guard"}}},
        {"delete": {"chain": {"family": "bridge", "table": "vbdecl", "name": "vb-1a2b3c4d-guard"}}}]
    assert guard.delete_commands("vb-1a2b3c4d", [], False) == []


def _listing(*, map_: bool = True, chain: bool = True, hooked: int = 1) -> list[dict[str, Any]]:
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
    flushed = guard.base_repair_commands(_listing(hooked=0))
    assert [next(iter(c)) for c in flushed] == ["flush", "add"]
    assert "rule" in flushed[1]["add"]
    rebuilt = guard.base_repair_commands(_listing(map_=False, chain=False, hooked=0))
    assert [next(iter(c["add"])) for c in rebuilt] == ["map", "chain", "rule"]
    assert not any("delete" in c for c in rebuilt)

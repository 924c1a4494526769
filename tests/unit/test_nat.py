"""NAT: the sysctls it changes are saved before they change; the rules it makes."""

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


def test_a_port_without_host_ip_leaves_ipv6_loopback_alone() -> None:
    """A review: [::1]:PORT hung (Linux cannot NAT ::1 out of the host) instead of
    being refused; the IPv4 rule keeps 127.0.0.1 (route_localnet makes that work)."""
    cmds = nat.port_add("inst-1", {"host": 8080, "container": 80}, "10.0.0.2", "fd00::2")
    rules = [c["add"]["rule"]["expr"] for c in cmds if c.get("add", {}).get("rule", {}).get("chain") == "inst-1-tcp-8080"]
    v4, v6 = rules
    loopback6 = {"match": {"op": "!=", "left": {"payload": {"protocol": "ip6", "field": "daddr"}}, "right": "::1"}}
    assert loopback6 in v6 and not any("daddr" in str(e) for e in v4)


def test_forwarding_set_back_keeps_each_interfaces_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """A review: writing ip_forward back to 0 also set every interface's forwarding to 0
    (the kernel writes them all), one that had its own 1 included."""
    conf = "/proc/sys/net/ipv4/conf"
    values = {netlink.FORWARD["4"]: "1", f"{conf}/eth7/forwarding": "1", f"{conf}/default/forwarding": "1"}

    def sysctl_set(key: str, value: str) -> None:
        values[key] = value
        if key == netlink.FORWARD["4"]:      # as the kernel does
            for name in values:
                if name.startswith(conf):
                    values[name] = value

    monkeypatch.setattr(netlink, "sysctl_get", values.__getitem__)
    monkeypatch.setattr(netlink, "sysctl_set", sysctl_set)
    host = {"forward": {"4": "0"}, "forward_conf": {"4": {"eth7": "1", "default": "0"}}}
    nat._forward_restore(host)
    assert values == {netlink.FORWARD["4"]: "0", f"{conf}/eth7/forwarding": "1", f"{conf}/default/forwarding": "0"}
    assert host == {"forward": {}}


def test_the_egress_of_a_masquerade_found_by_recovery_is_its_rules():
    """A network review: a masquerade recovered from an apply killed in its step was
    recorded with egress "auto", drift on every plan after (auto -> eth0)."""
    from vbdecl.ops.nat import _masquerade_egress

    items = [{"chain": {"name": "vb-1-masq"}},
             {"rule": {"chain": "other", "expr": [{"match": {"op": "==", "left": {"meta": {"key": "oifname"}},
                                                              "right": "wlan0"}}]}},
             {"rule": {"chain": "vb-1-masq", "expr": [
                 {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "eth0"}},
                 {"masquerade": None}]}}]
    assert _masquerade_egress(items, "vb-1-masq") == "eth0"
    assert _masquerade_egress(items, "vb-2-masq") is None


class FakeNft:
    """The inet NAT table as a set of chain names; no bridge guard table."""

    def __init__(self, chains: set[str]) -> None:
        self.chains: set[str] | None = set(chains)
        self.ran: list[Any] = []

    def list_table(self, family: str, table: str) -> list[dict[str, Any]] | None:
        if (family, table) != (nat.FAMILY, nat.TABLE) or self.chains is None:
            return None
        return [{"table": {"family": family, "name": table}},
                *({"chain": {"name": name}} for name in sorted(self.chains))]

    def _apply(self, cmds: list[Any]) -> None:
        for cmd in cmds:
            self.ran.append(cmd)
            body = cmd.get("delete") or {}
            if "chain" in body and self.chains is not None:
                self.chains.discard(body["chain"]["name"])
            elif "table" in body:
                self.chains = None

    def run(self, cmds: list[Any], what: str = "") -> None:
        self._apply(cmds)

    def try_run(self, cmds: list[Any]) -> tuple[bool, str]:
        self._apply(cmds)
        return True, ""


def test_a_janitors_tidy_gives_back_what_the_dead_environments_were_the_last_to_need(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Left from the last session, seen by hand only: a test run killed with its
    environments left IP forwarding on and the NAT table, and a janitor's tidy (or the
    NAT lock's collection) removed their chains but neither. Collected as the last
    users, they go: forwarding set back as saved, the table deleted, the files gone."""
    from vbdecl.net import shared
    from vbdecl.ops.base import Context

    values = {netlink.FORWARD["4"]: "1"}
    monkeypatch.setattr(nat, "HOST_DIR", str(tmp_path))
    monkeypatch.setattr(netlink, "sysctl_get", values.__getitem__)
    monkeypatch.setattr(netlink, "sysctl_set", values.__setitem__)
    dead = "vb-dead0001"
    (tmp_path / "nat.json").write_text(json.dumps({
        "forward": {"4": "0"},
        "instances": {dead: {"keys": ["masq"], "pid": 2**22 + 1, "netns": 1, "pidns": shared.pidns(),
                             "families": {"masq": ["4"]}}}}))
    fake = FakeNft({*nat.BASE_CHAINS, f"{dead}-masq"})
    monkeypatch.setattr(nat, "_nft", lambda ctx: fake)
    nat.tidy(Context(name="janitor", instance="vb-janitor1", state_dir=str(tmp_path),
                     runtime_dir=str(tmp_path / "run")))
    assert fake.chains is None, fake.ran                    # the table went
    assert values[netlink.FORWARD["4"]] == "0"              # forwarding as it was
    assert not (tmp_path / "nat.json").exists() and not (tmp_path / "nat.lock").exists()


def test_a_port_masquerades_the_environment_s_own_hairpin_only() -> None:
    """A connection from the environment to its own port is masqueraded going back to
    it; a neighbour's keeps its source (a review: masqueraded, it came from the host)."""
    cmds = nat.port_add("vb-1", {"host": 8080, "container": 80}, "10.0.0.2", "fd00::2")
    hp = "vb-1-tcp-8080-hp"
    rules = [c["add"]["rule"] for c in cmds if c.get("add", {}).get("rule", {}).get("chain") == hp]
    assert [[e["match"]["right"] for e in r["expr"][:2]] for r in rules] == [["10.0.0.2", "10.0.0.2"],
                                                                            ["fd00::2", "fd00::2"]]
    assert all(r["expr"][-1] == {"masquerade": None} and r["comment"] == "vb-1" for r in rules)
    element = cmds[-1]["create"]["element"]
    assert element["name"] == "hairpin_tcp" and element["elem"][0][1] == {"jump": {"target": hp}}
    # undone as one object with the port; deleted with it where the record says it has one
    undo = nat._undo_of(cmds)
    assert {"delete": {"chain": nat._t(name=hp)}} in undo
    assert {"delete": {"element": nat._t(name="hairpin_tcp", elem=[8080])}} in undo
    assert {"delete": {"chain": nat._t(name=hp)}} in nat.port_delete("vb-1", "tcp", 8080, hairpin=True)
    assert not any(hp in str(c) for c in nat.port_delete("vb-1", "tcp", 8080))
    # a port on the other family's host_ip: no hairpin for that family either
    only6 = nat.port_add("vb-1", {"host": 1, "container": 2, "protocol": "udp", "host_ip": "fd00::9"},
                         "10.0.0.2", "fd00::2")
    assert [c["add"]["rule"]["expr"][1]["match"]["right"] for c in only6
            if c.get("add", {}).get("rule", {}).get("chain") == "vb-1-udp-1-hp"] == ["fd00::2"]
    # on 127.0.0.1 none at all: the environment's own loopback answers there (a review)
    local = nat.port_add("vb-1", {"host": 1, "container": 2, "host_ip": "127.0.0.1"}, "10.0.0.2", None)
    assert not any("-hp" in str(c) or "hairpin" in str(c) for c in local)


def _listing(hairpin: bool) -> list[dict[str, object]]:
    """The table as nftables lists it right after base_commands(hairpin) made it."""
    out: list[dict[str, object]] = []
    for cmd in nat.base_commands(hairpin)[3:]:
        body = cmd["add"]
        if "map" in body:
            out.append({"map": body["map"]})
        elif "chain" in body:
            out.append({"chain": body["chain"]})
        else:
            out.append({"rule": body["rule"]})
    return out


def test_a_table_made_before_hairpins_is_whole_and_the_next_add_brings_them_in() -> None:
    """An upgrade: the environments published before keep working without a false drift
    (each plan would say their ports were deleted outside vbdecl); an add repairs the
    table to the new base (the hairpin maps and the postrouting rules that use them)."""
    old, new = _listing(False), _listing(True)
    assert nat.base_whole(old) and nat.base_whole(new)
    assert nat.base_repair_commands(new) == []
    repair = nat.base_repair_commands(old)
    assert {"flush": {"chain": nat._t(name="postrouting")}} in repair
    assert [c["add"]["map"]["name"] for c in repair if "map" in c.get("add", {})] == ["hairpin_tcp", "hairpin_udp"]
    assert not nat.base_whole([i for i in new if i.get("map", {}).get("name") != "ports"])  # type: ignore[union-attr]
    # the hairpin maps without the rules that use them: every hairpin dead (a review: no drift)
    hairpin_rules = [i for i in new if "proto-dst" in str(i.get("rule", ""))]
    assert len(hairpin_rules) == 2
    assert not nat.base_whole([i for i in new if i not in hairpin_rules])

"""net.guard: only an environment's own MAC and addresses leave its veth.

A bridge is one network: with ``NET_RAW`` or ``NET_ADMIN`` a process could answer
ARP and neighbour discovery for a neighbour's address or the gateway's, send with
their addresses or MACs, or advertise itself as an IPv6 router, and so take what
the host and the neighbours send them (a security review did each). The guard
drops such frames where they enter the bridge, in ONE nftables table of the
bridge family, host-wide as ``inet vbdecl`` is (:mod:`vbdecl.ops.nat`)::

    table bridge vbdecl {
        map ports { type ifname : verdict }     # "vb1a2b3c4dh" : goto vb-1a2b3c4d-guard
        chain prerouting {
            type filter hook prerouting priority -300; policy accept
            iifname vmap @ports
            iifgroup 0x7664 drop        # a veth of vbdecl's without its guard (yet)
        }
        chain vb-1a2b3c4d-guard {
            ether type != { ip, arp, ip6 } drop
            ether saddr != MAC drop
            arp saddr ether != MAC drop
            arp saddr ip != { ADDR, 0.0.0.0 } drop      # (0.0.0.0: an address probe)
            ip saddr != ADDR drop
            ip6 saddr != { ADDR6, LINKLOCAL, :: } drop  # (::, a duplicate address check)
            icmpv6 type { nd-*, nd-redirect } exthdr frag exists drop
            icmpv6 type { nd-router-advert, nd-redirect } drop
            icmpv6 type nd-neighbor-advert @th,64,128 != ADDR6 @th,64,128 != LINKLOCAL drop
        }
    }

(the last rule: a neighbour advertisement only for its own addresses; nftables 1.0.6
has no ``icmpv6 taddr``). The MAC is the one net.veth gave eth0 (ops.net.env_mac),
never one the environment chose since, and LINKLOCAL its EUI-64 address; a process
that changes them cuts itself off. The veth's bridge port learns no MAC and has a
static entry for that one (netlink.pin_port): frames the bridge keeps for itself
(LLDP, 802.1X) skip this hook, and it learnt their source before. Changes happen
under the host-wide NAT lock; an environment's chain is registered in
``/run/vbdecl/nat.json`` (``guards``: instance -> its veth, the network namespace of
the host side) so that one whose veth went with its namespace without a teardown is
collected, and the table goes with its last chain.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from vbdecl.errors import VbdeclError
from vbdecl.ops.base import Context, Params, Record
from vbdecl.ops.nat import rules_sha256
from vbdecl.ops.net import GUARDED_GROUP, INNER, _sess, _session

FAMILY = "bridge"
TABLE = "vbdecl"
BASE_CHAINS = {"prerouting"}

Cmd = dict[str, Any]


# --- pure: the JSON commands ----------------------------------------------------

def _t(**kw: Any) -> dict[str, Any]:
    return {"family": FAMILY, "table": TABLE, **kw}


def chain_of(instance: str) -> str:
    return f"{instance}-guard"


def base_commands() -> list[Cmd]:
    """Create the table with its map and hooked chain, empty."""
    return [
        {"add": {"table": {"family": FAMILY, "name": TABLE}}},
        {"add": {"map": _t(name="ports", type="ifname", map="verdict")}},
        {"add": {"chain": _t(name="prerouting", type="filter", hook="prerouting", prio=-300, policy="accept")}},
        {"add": {"rule": _t(chain="prerouting", expr=[
            {"vmap": {"key": {"meta": {"key": "iifname"}}, "data": "@ports"}}])}},
        # a veth of vbdecl's without a guard (made again, its guard not there yet): nothing
        {"add": {"rule": _t(chain="prerouting", expr=[
            {"match": {"op": "==", "left": {"meta": {"key": "iifgroup"}}, "right": GUARDED_GROUP}},
            {"drop": None}])}},
    ]


def _drop_unless(left: dict[str, Any], right: Any) -> list[dict[str, Any]]:
    return [{"match": {"op": "!=", "left": left, "right": right}}, {"drop": None}]


def _field(protocol: str, field: str) -> dict[str, Any]:
    return {"payload": {"protocol": protocol, "field": field}}


def _raw(offset: int, length: int) -> dict[str, Any]:
    return {"payload": {"base": "th", "offset": offset, "len": length}}


def link_local(mac: str) -> str:
    """The EUI-64 link-local IPv6 address of ``mac`` (what a new namespace's eth0 takes)."""
    octets = bytearray(bytes.fromhex(mac.replace(":", "")))
    octets[0] ^= 0x02
    iid = bytes(octets[:3]) + b"\xff\xfe" + bytes(octets[3:])
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + iid))


def rules(mac: str, addr4: str, own6: list[str]) -> list[list[dict[str, Any]]]:
    """The guard chain's rules (nftables JSON expressions), in order; ``own6``: the
    environment's IPv6 addresses, its link-local one included."""
    advert: list[dict[str, Any]] = [
        {"match": {"op": "==", "left": _field("icmpv6", "type"), "right": "nd-neighbor-advert"}}]
    for addr in own6:
        # (as a hex string: the JSON parser's integers are 64 bits)
        advert.append({"match": {"op": "!=", "left": _raw(64, 128),
                                 "right": f"0x{int(ipaddress.IPv6Address(addr)):032x}"}})
    return [
        _drop_unless(_field("ether", "type"), {"set": ["ip", "arp", "ip6"]}),
        _drop_unless(_field("ether", "saddr"), mac),
        _drop_unless(_field("arp", "saddr ether"), mac),
        _drop_unless(_field("arp", "saddr ip"), {"set": [addr4, "0.0.0.0"]}),
        _drop_unless(_field("ip", "saddr"), addr4),
        _drop_unless(_field("ip6", "saddr"), {"set": [*own6, "::"]}),
        # (neighbour discovery is never fragmented; a fragmented advertisement hid its
        # target from the rule below, and was reassembled whole on the way: a review)
        [{"match": {"op": "==", "left": _field("icmpv6", "type"), "right": {"set": [
            "nd-router-solicit", "nd-router-advert", "nd-neighbor-solicit", "nd-neighbor-advert", "nd-redirect"]}}},
         {"match": {"op": "==", "left": {"exthdr": {"name": "frag"}}, "right": True}}, {"drop": None}],
        [{"match": {"op": "==", "left": _field("icmpv6", "type"),
                    "right": {"set": ["nd-router-advert", "nd-redirect"]}}}, {"drop": None}],
        [*advert, {"drop": None}],
    ]


def add_commands(instance: str, port: str, mac: str, addr4: str, own6: list[str]) -> list[Cmd]:
    """The instance's chain (emptied first: one left by an apply that died, or kept by a
    repair of the table's base, is filled anew, not twice) and its port's element."""
    chain = chain_of(instance)
    cmds: list[Cmd] = [{"add": {"chain": _t(name=chain)}}, {"flush": {"chain": _t(name=chain)}}]
    cmds += [{"add": {"rule": _t(chain=chain, comment=instance, expr=expr)}} for expr in rules(mac, addr4, own6)]
    # (goto, not jump: a frame its chain lets through is accepted there, and does not
    # come back to the base chain's rule that drops an unguarded veth's)
    cmds.append({"add": {"element": _t(name="ports", elem=[
        [{"elem": {"val": port, "comment": instance}}, {"goto": {"target": chain}}]])}})
    return cmds


def delete_commands(instance: str, ports: list[str], chain: bool) -> list[Cmd]:
    """Remove the map elements of ``ports`` and, with ``chain``, the instance's chain."""
    cmds: list[Cmd] = [{"delete": {"element": _t(name="ports", elem=ports)}}] if ports else []
    if chain:
        name = chain_of(instance)
        cmds += [{"flush": {"chain": _t(name=name)}}, {"delete": {"chain": _t(name=name)}}]
    return cmds


def _found(items: list[dict[str, Any]], instance: str) -> tuple[int | None, list[str]]:
    """(rules in the instance's chain, None without it; the ports that jump to it)."""
    chain = chain_of(instance)
    count = None
    ports: list[str] = []
    for item in items:
        if "chain" in item and item["chain"]["name"] == chain:
            count = count or 0
        elif "rule" in item and item["rule"]["chain"] == chain:
            count = (count or 0) + 1
        elif "map" in item and item["map"]["name"] == "ports":
            for key, verdict in item["map"].get("elem") or []:
                if any(((verdict or {}).get(how) or {}).get("target") == chain for how in ("goto", "jump")):
                    ports.append(key if isinstance(key, str) else key.get("elem", {}).get("val"))
    return count, ports


# --- the host side -------------------------------------------------------------

def _nft(ctx: Context) -> Any:
    from vbdecl.sys import nft

    return nft.session(ctx.extra)


def base_repair_commands(items: list[dict[str, Any]]) -> list[Cmd]:
    """What puts back the table's map and its hooked chain's rule where someone deleted
    or flushed them; empty when whole. The environments' chains stay as they are (an
    element lost with a deleted map is each one's drift, which its apply repairs)."""
    has_map = any("map" in i and i["map"]["name"] == "ports" for i in items)
    has_chain = any("chain" in i and i["chain"]["name"] == "prerouting" for i in items)
    hooked = sum(1 for i in items if "rule" in i and i["rule"]["chain"] == "prerouting")
    want = base_commands()[1:]
    if has_map and has_chain and hooked == len(want) - 2:
        return []
    out: list[Cmd] = [] if has_map else [want[0]]
    out.append({"flush": {"chain": _t(name="prerouting")}} if has_chain else want[1])
    return out + want[2:]


def _netns() -> int:
    return os.stat("/proc/self/ns/net").st_ino


def collect(nft: Any, host: dict[str, Any]) -> None:
    """Remove the chains of registered guards whose veth is gone (an environment killed
    without a teardown: the veth went with its network namespace, the chain would stay).
    The veth, not the environment's init: a process may outlive its init in the namespace
    (a review saw the guard of a live process collected). Only guards made in this
    process's network namespace, whose table this is."""
    import socket

    guards = host.get("guards") or {}
    here = _netns()
    dead = []
    for inst, info in guards.items():
        if info.get("hostns") != here:
            continue
        try:
            socket.if_nametoindex(str(info.get("port")))
        except OSError:
            dead.append(inst)
    if not dead:
        return
    items = nft.list_table(FAMILY, TABLE) or []
    for inst in dead:
        count, ports = _found(items, inst)
        if count is not None or ports:
            for cmd in delete_commands(inst, ports, count is not None):
                nft.try_run([cmd])
        del guards[inst]


def tidy(nft: Any, host: dict[str, Any]) -> None:
    """Collect the guards of veths that are gone, and the table with the last one (under
    the NAT host lock: a guard's revert, a run's janitor through ops.nat.tidy)."""
    collect(nft, host)
    items = nft.list_table(FAMILY, TABLE)
    if items is None or host.get("guards"):
        return
    if not {i["chain"]["name"] for i in items if "chain" in i} - BASE_CHAINS:
        nft.run([{"add": {"table": {"family": FAMILY, "name": TABLE}}},
                 {"delete": {"table": {"family": FAMILY, "name": TABLE}}}],
                what="removing the table of the environments' guards")


class Guard:
    def describe(self, params: Params) -> str:
        return f"guard: only the environment's MAC and addresses from its veth onto bridge {params['bridge']}"

    def probe(self, ctx: Context, params: Params, record: Record | None) -> Record | None:
        items = _nft(ctx).list_table(FAMILY, TABLE) or []
        count, ports = _found(items, ctx.instance)
        if record is None:
            # recovery of an apply that died in this step: the chain named after the instance
            if count is None and not ports:
                return None
            return {"chain": chain_of(ctx.instance), "port": ports[0] if ports else None,
                    "rules": count or 0, "rules_sha256": rules_sha256(items, chain_of(ctx.instance))}
        if count is None or record.get("port") not in ports or base_repair_commands(items):
            return None         # (nothing guards the veth: gone)
        live = dict(record, rules=count)    # (a rule deleted or added by hand: drift)
        if "rules_sha256" in record:        # (or replaced; a record from before has no digest)
            live["rules_sha256"] = rules_sha256(items, chain_of(ctx.instance))
        return live

    @_session
    def apply(self, ctx: Context, params: Params) -> Record:
        from vbdecl.ops.nat import _host_lock, add_whole
        from vbdecl.sys import netlink
        from vbdecl.sys.nft import translate

        veth = ctx.records.get("net.veth") or {}
        addr4 = (ctx.records.get("net.address") or {}).get("address")
        addr6 = (ctx.records.get("net.address6") or {}).get("address")
        if not veth.get("host") or not addr4:
            raise VbdeclError("the guard needs the environment's veth and address, which have not landed",
                              hint="net.guard depends on net.address in the plan; apply again")
        pid = int(ctx.env_pid or 0)
        env = _sess(ctx).env(pid) if pid else None
        inner = netlink.link(env, INNER) if env is not None else None
        if inner is None or not inner.get("mac"):
            raise VbdeclError(f"the environment's {INNER} is gone", hint="apply again to recreate the environment")
        # the MAC vbdecl gave it (a veth an older vbdecl made: the one it has), never one
        # the environment chose since; its link-local address is derived from it
        mac = str(veth.get("mac") or inner["mac"])
        own6 = [a for a in (addr6,) if a] + [link_local(mac)]
        if not veth.get("mac"):
            # (net.veth pins the port of a veth it gives its MAC)
            ipr = _sess(ctx).host
            port = netlink.index_of(ipr, veth["host"])
            if port is None:
                raise VbdeclError(f"veth {veth['host']} is gone", hint="apply again to recreate the environment")
            netlink.pin_port(ipr, port, veth["host"], mac)
        cmds = add_commands(ctx.instance, veth["host"], mac, addr4, own6)
        nft = _nft(ctx)
        with _host_lock() as host:
            collect(nft, host)
            host.setdefault("guards", {})[ctx.instance] = {"port": veth["host"], "hostns": _netns()}
            listed, err = add_whole(nft, FAMILY, TABLE, cmds, delete_commands(ctx.instance, [veth["host"]], True),
                                    lambda items: base_commands() if items is None else base_repair_commands(items))
            if err is not None:
                host["guards"].pop(ctx.instance, None)
                raise translate(err, "guarding the environment's veth")
        # what the environment's addresses announced before its guard was there went
        # nowhere: the neighbours learn them now (net.address's announcement, again)
        netlink.announce(env, pid, INNER, inner["index"], v6=bool(addr6))
        return {"chain": chain_of(ctx.instance), "port": veth["host"], "mac": mac,
                "addresses": [addr4, *own6], "rules": len(rules(mac, addr4, own6)),
                "rules_sha256": rules_sha256(listed, chain_of(ctx.instance))}

    def revert(self, ctx: Context, record: Record) -> None:
        from vbdecl.ops.nat import _host_lock

        nft = _nft(ctx)
        with _host_lock() as host:
            items = nft.list_table(FAMILY, TABLE) or []
            count, ports = _found(items, ctx.instance)
            if count is not None or ports:
                ok, _err = nft.try_run(delete_commands(ctx.instance, ports, count is not None))
                if not ok:
                    for cmd in delete_commands(ctx.instance, ports, count is not None):
                        nft.try_run([cmd])
            (host.get("guards") or {}).pop(ctx.instance, None)
            tidy(nft, host)

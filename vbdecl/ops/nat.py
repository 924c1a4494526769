"""NAT ops: masquerade and published ports, in ONE nftables table vbdecl owns.

Layout of ``table inet vbdecl`` (created when absent, deleted when no
environment chain is left in it, under a host-wide lock)::

    map masq4 { type ipv4_addr : verdict }          # env address -> jump <inst>-masq
    map masq6 { type ipv6_addr : verdict }
    map ports { type inet_proto . inet_service : verdict }   # tcp . 8080 -> jump <inst>-tcp-8080
    map hairpin_tcp { type inet_service : verdict }          # 8080 -> jump <inst>-tcp-8080-hp
    map hairpin_udp { type inet_service : verdict }
    chain postrouting { nat hook postrouting; ip saddr vmap @masq4; ip6 saddr vmap @masq6;
                        meta l4proto tcp ct status dnat ct original proto-dst vmap @hairpin_tcp; (udp) }
    chain prerouting  { nat hook prerouting;  fib daddr type local meta l4proto . th dport vmap @ports }
    chain output      { nat hook output;      fib daddr type local meta l4proto . th dport vmap @ports }
    chain <inst>-masq      { oifname "<egress>" masquerade comment "<inst>" }
    chain <inst>-tcp-8080  { [ip daddr HOST_IP] tcp dport 8080 dnat ip to ADDR:80 comment "<inst>" }
    chain <inst>-tcp-8080-hp { ip saddr ADDR ip daddr ADDR masquerade comment "<inst>" }

Hairpin: the environment's own connection to its published port, DNATed back to
it, is masqueraded, so that its answer comes back through the host's NAT instead
of to itself, which would not know it (the kernel's bridge, when it passes bridged
traffic through netfilter, sends it back out the port it came in: net.veth puts
that port in hairpin mode). A neighbour's is not: where the bridge passes its
traffic through netfilter it works with the neighbour's own address, which a
masquerade would turn into the host's (a review: a service that trusts the host).

An environment owns only its chains and the map elements that point at them
(all commented with its instance id), so one transaction adds them and one
removes exactly them; no rule handles are needed. A host port already
published by another environment is a conflict (``create element``).

IP forwarding is switched on when the first NAT user needs it and back off
when the last goes, only if vbdecl was the one to switch it on.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
from collections.abc import Callable, Collection, Iterator
from typing import Any

from vbdecl.errors import ConflictError, SysError, VbdeclError
from vbdecl.net import shared
from vbdecl.ops import register
from vbdecl.ops.base import Context, Params, Record
from vbdecl.ops.net import _session

FAMILY = "inet"
TABLE = "vbdecl"
PROTOCOLS = ("tcp", "udp")

register("nat.masquerade", "vbdecl.ops.nat:Masquerade")
register("nat.port", "vbdecl.ops.nat:Port")

Cmd = dict[str, Any]


# --- pure: the JSON commands ----------------------------------------------------

def _t(**kw: Any) -> dict[str, Any]:
    return {"family": FAMILY, "table": TABLE, **kw}


def _ports_rule() -> list[dict[str, Any]]:
    return [
        {"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}},
        {"vmap": {"key": {"concat": [{"meta": {"key": "l4proto"}},
                                     {"payload": {"protocol": "th", "field": "dport"}}]},
                  "data": "@ports"}},
    ]


def base_commands(hairpin: bool = True) -> list[Cmd]:
    """(Re)create the table with its maps and hooked chains, empty (without ``hairpin``:
    as vbdecls before hairpins made it)."""
    cmds: list[Cmd] = [
        {"add": {"table": {"family": FAMILY, "name": TABLE}}},
        {"delete": {"table": {"family": FAMILY, "name": TABLE}}},
        {"add": {"table": {"family": FAMILY, "name": TABLE}}},
        {"add": {"map": _t(name="masq4", type="ipv4_addr", map="verdict")}},
        {"add": {"map": _t(name="masq6", type="ipv6_addr", map="verdict")}},
        {"add": {"map": _t(name="ports", type=["inet_proto", "inet_service"], map="verdict")}},
        *({"add": {"map": _t(name=hairpin_map(proto), type="inet_service", map="verdict")}}
          for proto in PROTOCOLS if hairpin),
    ]
    for name, hook, prio in (("postrouting", "postrouting", 100), ("prerouting", "prerouting", -100),
                             ("output", "output", -100)):
        cmds.append({"add": {"chain": _t(name=name, type="nat", hook=hook, prio=prio, policy="accept")}})
    cmds += [
        {"add": {"rule": _t(chain="postrouting", expr=[
            {"vmap": {"key": {"payload": {"protocol": "ip", "field": "saddr"}}, "data": "@masq4"}}])}},
        {"add": {"rule": _t(chain="postrouting", expr=[
            {"vmap": {"key": {"payload": {"protocol": "ip6", "field": "saddr"}}, "data": "@masq6"}}])}},
        *({"add": {"rule": _t(chain="postrouting", expr=[
            {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": proto}},
            {"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}},
            {"vmap": {"key": {"ct": {"key": "proto-dst", "dir": "original"}}, "data": f"@{hairpin_map(proto)}"}}])}}
          for proto in PROTOCOLS if hairpin),
        {"add": {"rule": _t(chain="prerouting", expr=_ports_rule())}},
        {"add": {"rule": _t(chain="output", expr=_ports_rule())}},
        # Ports published on 127.0.0.1 (or on every address): the host's own
        # loopback connections are DNATed out of the bridge, which needs
        # route_localnet there; masquerade them so the environment can answer,
        # and drop anything else addressed to 127/8 that arrives off lo (what
        # route_localnet would otherwise let an environment reach), or that claims to
        # come from there (a security review had an environment with NET_RAW reach the
        # host's services that trust loopback peers, with a 127.0.0.2 source).
        {"add": {"rule": _t(chain="postrouting", expr=[
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                       "right": {"prefix": {"addr": "127.0.0.0", "len": 8}}}},
            {"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}},
            {"masquerade": None}])}},
        {"add": {"chain": _t(name="guard", type="filter", hook="prerouting", prio=-300, policy="accept")}},
        {"add": {"rule": _t(chain="guard", expr=[
            {"match": {"op": "!=", "left": {"meta": {"key": "iifname"}}, "right": "lo"}},
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                       "right": {"prefix": {"addr": "127.0.0.0", "len": 8}}}},
            {"drop": None}])}},
        {"add": {"rule": _t(chain="guard", expr=[
            {"match": {"op": "!=", "left": {"meta": {"key": "iifname"}}, "right": "lo"}},
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                       "right": {"prefix": {"addr": "127.0.0.0", "len": 8}}}},
            {"drop": None}])}},
    ]
    return cmds


def base_whole(items: list[dict[str, Any]]) -> bool:
    """Whether the table's maps, hooked chains and their rules are all there, as this
    vbdecl makes them or as one from before hairpins made them, which has no hairpin
    map (what an environment published then works as it did; the next add brings the
    hairpin's in). A table with hairpin maps but not the rules that use them is not
    (a review: every hairpin dead, and no drift)."""
    if not base_repair_commands(items):
        return True
    hairpins = {hairpin_map(proto) for proto in PROTOCOLS}
    return not any(i.get("map", {}).get("name") in hairpins for i in items) \
        and not base_repair_commands(items, hairpin=False)


def base_repair_commands(items: list[dict[str, Any]], hairpin: bool = True) -> list[Cmd]:
    """What puts back the table's maps, hooked chains and their rules where someone
    flushed or deleted them (``nft flush table``): the chains are flushed and
    filled again, the environments' own chains and elements are left as they are.
    Empty when the base is whole."""
    want = base_commands(hairpin)[3:]
    maps = {i["map"]["name"] for i in items if "map" in i}
    chains = {i["chain"]["name"] for i in items if "chain" in i}
    rules: dict[str, int] = {}
    for i in items:
        if "rule" in i:
            rules[i["rule"]["chain"]] = rules.get(i["rule"]["chain"], 0) + 1
    expected: dict[str, int] = {}
    for cmd in want:
        if "rule" in cmd["add"]:
            expected[cmd["add"]["rule"]["chain"]] = expected.get(cmd["add"]["rule"]["chain"], 0) + 1
    if (all(cmd["add"]["map"]["name"] in maps for cmd in want if "map" in cmd["add"])
            and all(rules.get(chain, 0) == n and chain in chains for chain, n in expected.items())):
        return []
    out: list[Cmd] = []
    for cmd in want:
        body = cmd["add"]
        if "map" in body and body["map"]["name"] in maps:
            continue
        if "chain" in body and body["chain"]["name"] in chains:
            out.append({"flush": {"chain": _t(name=body["chain"]["name"])}})
            continue
        out.append(cmd)
    return out


def delete_table_commands() -> list[Cmd]:
    return [{"add": {"table": {"family": FAMILY, "name": TABLE}}},
            {"delete": {"table": {"family": FAMILY, "name": TABLE}}}]


def masq_chain(instance: str) -> str:
    return f"{instance}-masq"


def port_chain(instance: str, protocol: str, host_port: int) -> str:
    return f"{instance}-{protocol}-{host_port}"


def hairpin_chain(instance: str, protocol: str, host_port: int) -> str:
    return f"{port_chain(instance, protocol, host_port)}-hp"


def hairpin_map(protocol: str) -> str:
    return f"hairpin_{protocol}"


def rules_sha256(items: list[dict[str, Any]], chain: str) -> str:
    """A digest of the rules of ``chain`` as nftables lists them (in order, without their
    handles): a rule replaced by hand, with a weaker one of the same count, changes it.
    Recorded from a listing made right after the add, never from the commands sent,
    whose form the listing does not keep (sets come back sorted, for one)."""
    import hashlib

    listed = [{k: v for k, v in i["rule"].items() if k != "handle"}
              for i in items if isinstance(i.get("rule"), dict) and i["rule"].get("chain") == chain]
    return hashlib.sha256(json.dumps(listed, sort_keys=True).encode()).hexdigest()


def _elem(key: Any, instance: str, chain: str) -> list[Any]:
    return [{"elem": {"val": key, "comment": instance}}, {"jump": {"target": chain}}]


def masquerade_add(instance: str, egress: str, addrs4: list[str], addrs6: list[str]) -> list[Cmd]:
    chain = masq_chain(instance)
    cmds: list[Cmd] = [
        {"add": {"chain": _t(name=chain)}},
        {"add": {"rule": _t(chain=chain, comment=instance, expr=[
            {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": egress}},
            {"masquerade": None}])}},
    ]
    for name, addrs in (("masq4", addrs4), ("masq6", addrs6)):
        if addrs:
            cmds.append({"create": {"element": _t(name=name, elem=[_elem(a, instance, chain) for a in addrs])}})
    return cmds


def masquerade_delete(instance: str, addrs4: list[str], addrs6: list[str]) -> list[Cmd]:
    chain = masq_chain(instance)
    cmds: list[Cmd] = []
    for name, addrs in (("masq4", addrs4), ("masq6", addrs6)):
        if addrs:
            cmds.append({"delete": {"element": _t(name=name, elem=addrs)}})
    cmds += [{"flush": {"chain": _t(name=chain)}}, {"delete": {"chain": _t(name=chain)}}]
    return cmds


def port_add(instance: str, port: dict[str, Any], addr4: str | None, addr6: str | None) -> list[Cmd]:
    """The port's DNAT chain and ``ports`` element, and its hairpin chain and element
    (see the module's comment; none for a port on a loopback address, which the
    environment's own loopback answers for it)."""
    proto = port.get("protocol") or "tcp"
    host_port = int(port["host"])
    container = int(port["container"])
    host_ip = port.get("host_ip")
    chain = port_chain(instance, proto, host_port)
    hairpin = hairpin_chain(instance, proto, host_port)
    cmds: list[Cmd] = [{"add": {"chain": _t(name=chain)}}]
    masquerades: list[Cmd] = []
    loopback = bool(host_ip) and ipaddress.ip_address(str(host_ip)).is_loopback
    dport = {"match": {"op": "==", "left": {"payload": {"protocol": proto, "field": "dport"}}, "right": host_port}}
    for fam, addr in (("ip", addr4), ("ip6", addr6)):
        if addr is None:
            continue
        expr: list[dict[str, Any]] = []
        if host_ip:
            if (":" in host_ip) != (fam == "ip6"):
                continue
            expr.append({"match": {"op": "==", "left": {"payload": {"protocol": fam, "field": "daddr"}},
                                   "right": host_ip}})
        else:
            expr.append({"match": {"op": "==", "left": {"meta": {"key": "nfproto"}},
                                   "right": "ipv4" if fam == "ip" else "ipv6"}})
            if fam == "ip6":
                # ::1 cannot be NATed out of the host (no route_localnet for IPv6): a
                # connection to [::1]:PORT would hang there instead of being refused
                expr.append({"match": {"op": "!=", "left": {"payload": {"protocol": "ip6", "field": "daddr"}},
                                       "right": "::1"}})
        expr += [dport, {"dnat": {"family": fam, "addr": addr, "port": container}}]
        cmds.append({"add": {"rule": _t(chain=chain, comment=instance, expr=expr)}})
        if not loopback:
            masquerades.append({"add": {"rule": _t(chain=hairpin, comment=instance, expr=[
                {"match": {"op": "==", "left": {"payload": {"protocol": fam, "field": "saddr"}}, "right": addr}},
                {"match": {"op": "==", "left": {"payload": {"protocol": fam, "field": "daddr"}}, "right": addr}},
                {"masquerade": None}])}})
    cmds.append({"create": {"element": _t(name="ports", elem=[
        _elem({"concat": [proto, host_port]}, instance, chain)])}})
    if masquerades:
        cmds += [{"add": {"chain": _t(name=hairpin)}}, *masquerades,
                 {"create": {"element": _t(name=hairpin_map(proto), elem=[_elem(host_port, instance, hairpin)])}}]
    return cmds


def port_delete(instance: str, protocol: str, host_port: int, *, hairpin: bool = False) -> list[Cmd]:
    """What :func:`port_add` made (its hairpin chain and element with ``hairpin``)."""
    chain = port_chain(instance, protocol, host_port)
    cmds: list[Cmd] = [{"delete": {"element": _t(name="ports", elem=[{"concat": [protocol, host_port]}])}}]
    if hairpin:
        cmds.append({"delete": {"element": _t(name=hairpin_map(protocol), elem=[host_port])}})
    cmds += [{"flush": {"chain": _t(name=chain)}}, {"delete": {"chain": _t(name=chain)}}]
    if hairpin:
        hp = hairpin_chain(instance, protocol, host_port)
        cmds += [{"flush": {"chain": _t(name=hp)}}, {"delete": {"chain": _t(name=hp)}}]
    return cmds


# --- host-wide bookkeeping -------------------------------------------------------
#
# The table and the forwarding sysctls are host-wide objects: environments of
# every state root share them. So their lifecycle is decided under a HOST-wide
# lock (like iptables' /run/xtables.lock) from the live table itself: the
# table is created when absent, and deleted when no environment chain is left
# in it. What forwarding was before vbdecl turned it on is kept in a small file
# beside the lock, on tmpfs: after a reboot the table and the sysctls are back
# to the host's defaults, and so is that file.

# Root-owned and private: never a world-writable directory such as /run/lock, where
# another user could plant a symlink for root to write through, or forge the state.
HOST_DIR = "/run/vbdecl"
BASE_CHAINS = {"postrouting", "prerouting", "output", "guard"}


def _nft(ctx: Context) -> Any:
    from vbdecl.sys import nft

    return nft.session(ctx.extra)


def _host_dir() -> str:
    """HOST_DIR, created 0700; refused unless it is a real directory of ours
    that nobody else can write to."""
    import stat

    try:
        os.makedirs(HOST_DIR, mode=0o700, exist_ok=True)
        st = os.lstat(HOST_DIR)
    except OSError as exc:
        raise SysError(f"cannot create {HOST_DIR} for vbdecl's host-wide bookkeeping (NAT, bridges): "
                       f"{exc.strerror}", errno=exc.errno or 0,
                       hint="NAT and bridges need root: run as root") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise SysError(f"{HOST_DIR} is not a private directory owned by uid {os.geteuid()}",
                       hint="remove it (it should be created by vbdecl, mode 0700) and retry")
    return HOST_DIR


@contextlib.contextmanager
def _host_lock() -> Iterator[dict[str, Any]]:
    """The host-wide NAT lock, and the saved forwarding state (written back)."""
    from vbdecl.sys.flock import lock

    base = _host_dir()
    lock_path = os.path.join(base, "nat.lock")
    path = os.path.join(base, "nat.json")
    fd = lock(lock_path)
    try:
        from vbdecl.engine.faults import crash_at

        crash_at("nat-locked")      # (a test hook: a kill that leaves the lock's file)
        try:
            fd_json = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd_json) as f:
                data: dict[str, Any] = json.load(f)
        except (OSError, ValueError):
            data = {}
        data.setdefault("forward", {})
        before = json.dumps(data, sort_keys=True)
        yield data
        if not any(data.values()):
            # Nothing saved and no environment registered: leave no files behind.
            for name in (path, lock_path):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name)
        elif json.dumps(data, sort_keys=True) != before:
            _save_host(data)
    finally:
        os.close(fd)


def tidy(ctx: Context, writer: int | None = None) -> None:
    """After the reverts of a vbdecl killed in a NAT step (a run's janitor): the host-wide
    NAT files it may have left with nothing of anyone's in them (nat.lock, made by the
    lock's open; nat.json with its dead instance), and the temp file of its write of
    nat.json (``writer``: its pid). A kill review found them left in /run/vbdecl."""
    if writer is not None:
        with contextlib.suppress(OSError):
            for name in os.listdir(HOST_DIR):
                if name.startswith(f".nat.json.{writer}-") and name.endswith(".tmp"):
                    os.unlink(os.path.join(HOST_DIR, name))
    if not any(os.path.exists(os.path.join(HOST_DIR, name)) for name in ("nat.lock", "nat.json")):
        return
    from vbdecl.ops import guard

    nft = _nft(ctx)
    with _host_lock() as host:      # (which removes both when nothing is left)
        _collect(nft, host)
        guard.tidy(nft, host)
        # (what the collected environments were the last to need: a test run killed with
        # its environments left forwarding on and the table)
        _settle(nft, host, "removing the NAT table no environment uses")


def _save_host(host: dict[str, Any]) -> None:
    """Write the saved state now (under the host lock): before a sysctl is changed, so
    that a vbdecl killed right after it still has the value to set back."""
    from vbdecl.engine.atomic import write_json

    write_json(os.path.join(HOST_DIR, "nat.json"), host, durable=False)   # on tmpfs: a reboot resets both


def add_whole(nft: Any, family: str, table: str, cmds: list[Cmd], undo: list[Cmd],
              base_of: Callable[[list[dict[str, Any]] | None], list[Cmd]]) -> tuple[list[dict[str, Any]], str | None]:
    """Run ``cmds`` in a table that ``base_of(listing)`` makes whole (its maps and hooked
    chains: all of them for no table, None; what someone flushed or deleted; nothing);
    (the table as listed after, the error text or None). The add goes alone first: it
    lands as is where the table is whole, the common case, and the one listing after it
    serves both the base's check and the caller's record. Where the base then still
    fails, what landed is taken back (``undo``). Under the caller's host lock."""
    landed, err = nft.try_run(cmds)
    items = nft.list_table(family, table)
    base = base_of(items)
    ok = landed
    if base:
        ok, err = nft.try_run(base + ([] if landed else cmds))
        if ok:
            items = nft.list_table(family, table)
    if not ok:
        if landed:
            nft.try_run(undo)
        return [], err
    return items or [], None


def _add(ctx: Context, key: str, cmds: list[Cmd], families: list[str], what: str, *,
         localnet: tuple[str, str] | None = None) -> list[dict[str, Any]]:
    """Run ``cmds`` in one transaction (creating the table when it is absent)
    and make sure forwarding is on for ``families`` (and route_localnet on
    ``localnet = (bridge, user key)``); all under the host lock. Returns the
    table as listed after the add."""
    from vbdecl.sys.nft import translate

    nft = _nft(ctx)
    with _host_lock() as host:
        _collect(nft, host)
        _register(host, ctx, key, families)
        # (a table made anew, never reset: the host lock is held)
        items, err = add_whole(nft, FAMILY, TABLE, cmds, _undo_of(cmds),
                               lambda listed: base_commands()[2:] if listed is None else base_repair_commands(listed))
        if err is not None:
            error = translate(err, what)
            if isinstance(error, ConflictError):
                error.holder = _holder(nft, host, cmds, ctx.instance, ctx.state_dir)
            raise error
        try:
            _forward_on(host, families)
            if localnet is not None:
                _localnet_on(host, *localnet)
            return items
        except BaseException:
            nft.try_run(_undo_of(cmds))
            raise


def _holder(nft: Any, host: dict[str, Any], cmds: list[Cmd], instance: str, state_dir: str) -> str | None:
    """Who holds the map element that ``cmds`` could not create (another environment's
    port, or address to masquerade): the instance its comment names, described from
    the host-wide registry (environment name, pid) when it is there."""
    wanted = [(body["element"]["name"], _elem_key(e[0]))
              for cmd in cmds for body in [cmd.get("create") or {}] if "element" in body
              for e in body["element"]["elem"]]
    for name, key, other in _element_owners(nft.list_table(FAMILY, TABLE) or []):
        if (name, key) in wanted and other != instance:
            return shared.describe(other, (host.get("instances") or {}).get(other), state_dir)
    return None


def _element_owners(items: list[dict[str, Any]]) -> Iterator[tuple[Any, Any, str]]:
    """(map name, key, instance) of each map element of a table listing whose comment
    names the instance that made it."""
    for m in (item["map"] for item in items if item.get("map")):
        for pair in m.get("elem") or []:
            head = pair[0] if isinstance(pair, list) and pair else None
            if isinstance(head, dict) and "elem" in head and isinstance(head["elem"].get("comment"), str):
                yield m.get("name"), _elem_key(head), head["elem"]["comment"]


def _register(host: dict[str, Any], ctx: Context, key: str, families: list[str]) -> None:
    """Remember which process's namespace this instance's NAT objects serve,
    which objects (``key``) it has, and the IP families each forwards."""
    from vbdecl.sys import netlink

    ino = netlink.netns_id(ctx.env_pid)
    if ctx.env_pid is not None and ino is not None:
        entry = host.setdefault("instances", {}).setdefault(ctx.instance, {"keys": []})
        entry.update({"pid": ctx.env_pid, "netns": ino, "pidns": shared.pidns(),
                      **shared.owner(ctx.name, ctx.state_dir)})
        if key not in entry.setdefault("keys", []):
            entry["keys"].append(key)
        entry.setdefault("families", {})[key] = list(families)


def _collect(nft: Any, host: dict[str, Any]) -> list[str]:
    """Remove the chains and map elements of registered instances whose
    namespace is gone (an environment killed without teardown): otherwise
    their published ports would stay taken forever. Their names."""
    from vbdecl.sys import netlink

    mine = shared.pidns()
    dead = [inst for inst, info in host.setdefault("instances", {}).items()
            if info.get("pidns") == mine
            and (not isinstance(info.get("pid"), int) or netlink.netns_id(info["pid"]) != info.get("netns"))]
    if not dead:
        return []
    items = nft.list_table(FAMILY, TABLE) or []
    cmds: list[Cmd] = []
    chains: list[str] = []
    for item in items:
        if "map" in item:
            m = item["map"]
            keys = [key for key, target in _elements(m)
                    if any(target.startswith(f"{inst}-") for inst in dead)]
            if keys:
                cmds.append({"delete": {"element": _t(name=m["name"], elem=keys)}})
        elif "chain" in item and any(item["chain"]["name"].startswith(f"{inst}-") for inst in dead):
            chains.append(item["chain"]["name"])
    for name in chains:
        cmds += [{"flush": {"chain": _t(name=name)}}, {"delete": {"chain": _t(name=name)}}]
    if cmds:
        ok, _err = nft.try_run(cmds)
        if not ok:
            for cmd in cmds:
                nft.try_run([cmd])
    for inst in dead:
        for key in [k for e in host.get("localnet", {}).values() for k in e["users"] if k.startswith(f"{inst}/")]:
            _localnet_off(host, key)
        del host["instances"][inst]
    return dead


def _jumps_to(items: list[dict[str, Any]], map_name: str, chain: str) -> list[Any]:
    """The keys of map ``map_name`` whose verdict jumps to ``chain``."""
    return [key for m in _maps(items, map_name) for key, target in _elements(m) if target == chain]


def _undo_of(cmds: list[Cmd]) -> list[Cmd]:
    """The delete commands matching the add commands of one environment object."""
    out: list[Cmd] = []
    for cmd in cmds:
        for verb in ("create", "add"):
            body = cmd.get(verb, {})
            if "element" in body:
                el = body["element"]
                keys = [e[0]["elem"]["val"] if isinstance(e, list) else e for e in el["elem"]]
                out.insert(0, {"delete": {"element": dict(el, elem=keys)}})
            elif "chain" in body:
                out += [{"flush": {"chain": body["chain"]}}, {"delete": {"chain": body["chain"]}}]
    return out


def _remove(ctx: Context, key: str, cmds: list[Cmd], what: str, *, localnet_key: str | None = None) -> None:
    """Run the delete ``cmds`` (tolerating objects already gone); delete the
    table when no environment is left in it, and give forwarding back."""
    from vbdecl.sys.nft import translate

    nft = _nft(ctx)
    with _host_lock() as host:
        if localnet_key is not None:
            _localnet_off(host, localnet_key)
        cmds = _own_elements_only(nft.list_table(FAMILY, TABLE) or [], cmds, ctx.instance)
        ok, err = nft.try_run(cmds)
        _collect(nft, host)
        if not ok:
            if "No such file or directory" not in err:
                raise translate(err, what)
            for cmd in cmds:  # partly gone already: remove what is left, one by one
                nft.try_run([cmd])
        registry = host.setdefault("instances", {})
        own = registry.get(ctx.instance)
        if own is not None and key in own.get("keys", []):
            own["keys"].remove(key)
            (own.get("families") or {}).pop(key, None)
        if own is not None and not own.get("keys"):
            registry.pop(ctx.instance, None)
        _settle(nft, host, what, leaving=ctx.instance)


def _settle(nft: Any, host: dict[str, Any], what: str, *, leaving: str = "") -> None:
    """Once objects are removed (of the instance ``leaving``, or of dead ones collected):
    what no registered environment needs any more goes back, forwarding as it was and
    the table, when no environment's chain is left in it."""
    registry = host.setdefault("instances", {})
    items = nft.list_table(FAMILY, TABLE)
    chains = {i["chain"]["name"] for i in items or [] if "chain" in i} - BASE_CHAINS
    if all(any(c.startswith(inst + "-") for inst in registry) for c in chains):
        # every object left is a registered environment's: a family none of them
        # forwards any more gets its setting back (a review: IPv6 forwarding stayed on)
        _forward_restore(host, keep=_families_in_use(registry))
    if any(info.get("keys") for inst, info in registry.items() if inst != leaving):
        return               # a registered environment still has objects
    if items is not None:
        if chains:
            return           # other environments (of any state root) still use it
        nft.run(delete_table_commands(), what=what)
    registry.pop(leaving, None)
    _forward_restore(host)


def _own_elements_only(items: list[dict[str, Any]], cmds: list[Cmd], instance: str) -> list[Cmd]:
    """``cmds`` with their map element deletions cut to the elements that jump to a chain
    of ``instance``: an element is found by its key (a port, an address), and once an
    environment died, another instance may hold that key (a concurrency review's
    destroy of a dead environment deleted a live environment's port of another state
    root)."""
    out: list[Cmd] = []
    for cmd in cmds:
        body = (cmd.get("delete") or {}).get("element")
        if body is None:
            out.append(cmd)
            continue
        keys = [key for key in body["elem"]
                if (_map_target(items, body["name"], key) or "").startswith(f"{instance}-")]
        if keys:
            out.append({"delete": {"element": dict(body, elem=keys)}})
    return out


def _families_in_use(registry: dict[str, Any]) -> set[str]:
    """The IP families the registered environments' NAT objects forward (an entry from
    before families were recorded: both)."""
    out: set[str] = set()
    for info in registry.values():
        for key in info.get("keys") or []:
            out.update((info.get("families") or {}).get(key, ("4", "6")))
    return out


def _forward_on(host: dict[str, Any], families: list[str]) -> None:
    from vbdecl.sys import netlink

    for fam in families:
        current = netlink.sysctl_get(netlink.FORWARD[fam])
        if current != "1":
            host["forward"].setdefault(fam, current)   # what it was before vbdecl
            # Writing the global key sets every interface's (and the default) too: theirs,
            # to set back after it (a review lost an interface's own setting)
            host.setdefault("forward_conf", {}).setdefault(fam, _conf_forwarding(fam))
            _save_host(host)
            netlink.sysctl_set(netlink.FORWARD[fam], "1")


def _forwarding_off(families: list[str]) -> bool:
    """Whether forwarding is off for one of ``families``: what vbdecl turned on for an
    environment's NAT turned off since (by hand, ``sysctl --system``, a network
    manager): drift that apply repairs, as a flushed chain is (a review found it
    unreported, every port dead and NAT with them)."""
    from vbdecl.sys import netlink

    try:
        return any(netlink.sysctl_get(netlink.FORWARD[fam]) != "1" for fam in families)
    except VbdeclError:
        return False        # (unreadable: not ours to judge)


def _conf_forwarding(fam: str) -> dict[str, str]:
    """The forwarding setting of every interface, and the default, of family ``fam``."""
    base = f"/proc/sys/net/ipv{fam}/conf"
    found = {}
    for name in os.listdir(base):
        if name != "all":
            try:
                with open(f"{base}/{name}/forwarding") as f:
                    found[name] = f.read().strip()
            except OSError:
                pass        # (gone meanwhile)
    return found


def _localnet_path(bridge: str) -> str:
    return f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet"


def _localnet_on(host: dict[str, Any], bridge: str, key: str) -> None:
    from vbdecl.sys import netlink

    entry = host.setdefault("localnet", {}).get(bridge)
    current = netlink.sysctl_get(_localnet_path(bridge))
    if entry is None:
        entry = host["localnet"][bridge] = {"saved": current, "users": []}
    if key not in entry["users"]:
        entry["users"].append(key)
    if current != "1":      # (also for a bridge made again since: a new one starts at 0)
        _save_host(host)
        netlink.sysctl_set(_localnet_path(bridge), "1")


def _localnet_is_on(bridge: str) -> bool:
    try:
        with open(_localnet_path(bridge)) as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def _localnet_off(host: dict[str, Any], key: str) -> None:
    from vbdecl.sys import netlink

    for bridge, entry in list(host.get("localnet", {}).items()):
        if key not in entry["users"]:
            continue
        entry["users"].remove(key)
        if entry["users"]:
            continue
        if entry.get("saved") not in (None, "1") and os.path.exists(_localnet_path(bridge)):
            netlink.sysctl_set(_localnet_path(bridge), str(entry["saved"]))
        del host["localnet"][bridge]


def _forward_restore(host: dict[str, Any], keep: set[str] | frozenset[str] = frozenset()) -> None:
    """Forwarding of each family vbdecl turned on set back as it was, but in ``keep``."""
    from vbdecl.sys import netlink

    for fam, saved in list(host["forward"].items()):
        if fam in keep:
            continue
        if saved != "1" and netlink.sysctl_get(netlink.FORWARD[fam]) == "1":
            netlink.sysctl_set(netlink.FORWARD[fam], str(saved))
            for name, value in (host.get("forward_conf") or {}).get(fam, {}).items():
                path = f"/proc/sys/net/ipv{fam}/conf/{name}/forwarding"
                with contextlib.suppress(OSError, VbdeclError):   # (an interface gone since)
                    if netlink.sysctl_get(path) != value:
                        netlink.sysctl_set(path, value)
        del host["forward"][fam]
        (host.get("forward_conf") or {}).pop(fam, None)
    if not host.get("forward_conf"):
        host.pop("forward_conf", None)


def _elem_key(entry: Any) -> Any:
    """The key of a map element as listed (``{"elem": {"val": KEY, "comment": ...}}`` or KEY)."""
    return entry["elem"]["val"] if isinstance(entry, dict) and "elem" in entry else entry


def _map_target(items: list[dict[str, Any]], name: str, key: Any) -> str | None:
    """The chain the element ``key`` of map ``name`` jumps to, None without such an element."""
    return next((target or None for m in _maps(items, name) for k, target in _elements(m) if k == key),
                None)


def _maps(items: list[dict[str, Any]], name: str) -> Iterator[dict[str, Any]]:
    """The maps called ``name`` in a table listing."""
    for item in items:
        m = item.get("map")
        if m and m.get("name") == name:
            yield m


def _elements(m: dict[str, Any]) -> Iterator[tuple[Any, str]]:
    """(key, the chain its verdict jumps to or "") of each element of a listed map."""
    for pair in m.get("elem") or []:
        if isinstance(pair, list) and len(pair) == 2:
            verdict = pair[1] if isinstance(pair[1], dict) else {}
            yield _elem_key(pair[0]), str((verdict.get("jump") or verdict.get("goto") or {}).get("target") or "")


def _dnat_port(rule: dict[str, Any]) -> int | None:
    """The port a rule DNATs to (None when it is not a DNAT rule)."""
    for expr in rule.get("expr") or []:
        if isinstance(expr, dict) and isinstance(expr.get("dnat"), dict):
            port = expr["dnat"].get("port")
            return int(port) if isinstance(port, int) else None
    return None


def _dnat_target(rule: dict[str, Any]) -> tuple[str, int] | None:
    """(address, port) a rule DNATs to (None when it is not a DNAT rule with both)."""
    for expr in rule.get("expr") or []:
        if isinstance(expr, dict) and isinstance(expr.get("dnat"), dict):
            addr, port = expr["dnat"].get("addr"), expr["dnat"].get("port")
            return (addr, int(port)) if isinstance(addr, str) and isinstance(port, int) else None
    return None


def _canonical(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address


def _env_addresses(ctx: Context) -> tuple[str | None, str | None]:
    a4 = (ctx.records.get("net.address") or {}).get("address")
    a6 = (ctx.records.get("net.address6") or {}).get("address")
    if a4 is None and a6 is None:
        raise VbdeclError("NAT needs the environment's address, but net.address has not landed",
                          hint="NAT depends on net.address in the plan; apply again")
    return a4, a6


# --- nat.masquerade -------------------------------------------------------------

def _masquerade_egress(items: list[dict[str, Any]], chain: str) -> str | None:
    """The interface the masquerade rule of ``chain`` matches (``oifname``), if any."""
    for item in items:
        rule = item.get("rule") if isinstance(item, dict) else None
        if not rule or rule.get("chain") != chain:
            continue
        for expr in rule.get("expr") or []:
            match = expr.get("match") if isinstance(expr, dict) else None
            if isinstance(match, dict) and match.get("left") == {"meta": {"key": "oifname"}} \
                    and isinstance(match.get("right"), str):
                return str(match["right"])
    return None


class Masquerade:
    def describe(self, params: Params) -> str:
        return f"masquerade {params.get('subnet')} out of {params.get('egress') or 'auto'}"

    def probe(self, ctx: Context, params: Params, record: Record | None) -> Record | None:
        items = _nft(ctx).list_table(FAMILY, TABLE) or []
        if record is None:
            # Recovery of an apply that died in this step (no record journaled): the
            # chain named after the instance, and the map elements that jump to it.
            names = {i["chain"]["name"] for i in items if "chain" in i}
            chain = masq_chain(ctx.instance)
            if chain not in names:
                return None
            # (the interface its rule names, as apply records it: "auto" would be
            # drift on every plan after the recovery, a review found)
            return {"chain": chain, "egress": _masquerade_egress(items, chain) or params.get("egress"),
                    "addresses4": _jumps_to(items, "masq4", chain),
                    "addresses6": _jumps_to(items, "masq6", chain), "rules_sha256": rules_sha256(items, chain)}
        chain = record["chain"]
        if not base_whole(items):
            return None         # the hooked chains that lead to it are gone
        # what makes it work: each address's masq4/masq6 element jumping to the chain,
        # and the chain's masquerade rule
        for name, key in (("masq4", "addresses4"), ("masq6", "addresses6")):
            if any(_map_target(items, name, addr) != chain for addr in record.get(key) or []):
                return None
        if not any(any(isinstance(e, dict) and "masquerade" in e for e in i["rule"].get("expr") or [])
                   for i in items if "rule" in i and i["rule"].get("chain") == chain):
            return None
        live = dict(record)
        if "rules_sha256" in record:    # (a rule replaced by hand: drift, shown as "rules")
            live["rules_sha256"] = rules_sha256(items, chain)
        if _forwarding_off((["4"] if record.get("addresses4") else []) + (["6"] if record.get("addresses6") else [])):
            if "forwarding" not in record:
                return None     # (a record from before it kept it: gone, as it works no more)
            live["forwarding"] = "off"      # (no packet of the environment's leaves the host)
        if (params.get("egress") or "auto") == "auto":
            try:   # the default route moved: drift, shown as "egress 'eth0' -> 'wlan0'"
                live["egress"] = self._probe_egress(ctx, params)
            except VbdeclError:
                live["egress"] = None
        return live

    @_session
    def _probe_egress(self, ctx: Context, params: Params) -> str:
        return self._egress(ctx, params)

    def _egress(self, ctx: Context, params: Params) -> str:
        from vbdecl.ops.net import _sess
        from vbdecl.sys import netlink

        ipr = _sess(ctx).host
        egress = params.get("egress") or "auto"
        if egress == "auto":
            try:
                found = netlink.own_default_route_interface()   # ipr is this process's namespace
            except OSError:
                found = netlink.default_route_interface(ipr)
            if found is None:
                raise VbdeclError("network.egress is auto, but the host has no default route",
                                  hint="set network.egress to the host interface to masquerade out of")
            return str(found)
        if netlink.index_of(ipr, egress) is None:
            raise VbdeclError(f"egress interface {egress} does not exist on the host",
                              hint="set network.egress to an existing interface, or auto")
        return str(egress)

    @_session
    def apply(self, ctx: Context, params: Params) -> Record:
        a4, a6 = _env_addresses(ctx)
        egress = self._egress(ctx, params)
        addrs4 = [a4] if a4 else []
        addrs6 = [a6] if a6 else []
        fams = (["4"] if addrs4 else []) + (["6"] if addrs6 else [])
        try:
            items = _add(ctx, f"{ctx.instance}/masq", masquerade_add(ctx.instance, egress, addrs4, addrs6),
                         fams, "adding the masquerade rule")
        except ConflictError as err:
            conflict = ConflictError(f"address {a4 or a6} is already masqueraded by "
                                     f"{err.holder or 'another environment'}",
                                     hint="two environments share an address; destroy the stale one")
            conflict.holder = err.holder
            raise conflict from err
        chain = masq_chain(ctx.instance)
        return {"chain": chain, "egress": egress, "addresses4": addrs4, "addresses6": addrs6,
                "forwarding": "on", "rules_sha256": rules_sha256(items, chain)}

    def revert(self, ctx: Context, record: Record) -> None:
        _remove(ctx, f"{ctx.instance}/masq",
                masquerade_delete(ctx.instance, record["addresses4"], record["addresses6"]),
                "removing the masquerade rule")

    def update(self, ctx: Context, params: Params, record: Record) -> Record:
        self.revert(ctx, record)
        return self.apply(ctx, params)


# --- nat.port -------------------------------------------------------------------

def _not_local(host_ip: str, port: int, proto: str) -> tuple[str, str]:
    """What to say of a port published on an address the host does not have, and what to do."""
    return (f"port {port}/{proto} is published on {host_ip}, which is not an address of this host: it "
            "would receive nothing",
            "use an address the host has (`ip -brief address` lists them), or leave host_ip out to "
            "publish on every address; an address added later needs an apply after it exists")


def catches(sock: dict[str, Any], host_ip: str | None, fams: list[str]) -> bool:
    """Would a port published on ``host_ip`` (None: every address of the host) for
    the families ``fams`` ("4", "6") take the traffic the host socket ``sock``
    (:func:`vbdecl.sys.sockets.receivers`) receives? A socket on ``::`` receives
    IPv4 too unless it is IPV6_V6ONLY (unknown counts as not)."""
    addr = ipaddress.ip_address(str(sock["address"]))
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    dual = addr.version == 6 and addr.is_unspecified and sock.get("v6only") is not True
    if host_ip is None:
        if addr.version == 4:
            return "4" in fams
        return "6" in fams or (dual and "4" in fams)
    want = ipaddress.ip_address(host_ip)
    if want.version == 4:
        return (addr.version == 4 and (addr.is_unspecified or addr == want)) or dual
    return addr.version == 6 and (addr.is_unspecified or addr == want)


def _check_free(proto: str, port: int, host_ip: str | None, fams: list[str]) -> None:
    """Refuse to publish a port a host program already receives on (as docker and
    podman refuse with "address already in use"): the DNAT would silently take its
    traffic away. Names the holder when /proc shows it."""
    from vbdecl.sys import sockets

    hits = [s for s in sockets.receivers(proto, port) if catches(s, host_ip, fams)]
    if not hits:
        return
    owners = sockets.holders({int(str(s["inode"])) for s in hits})
    who: list[str] = []
    for s in hits:
        for pid, comm in owners.get(int(str(s["inode"])), []):
            if f"pid {pid} ({comm})" not in who:
                who.append(f"pid {pid} ({comm})")
    holder = ", ".join(who) if who else f"a socket of uid {hits[0]['uid']} (no process of this host shows it)"
    where = ", ".join(sorted({f"[{s['address']}]:{port}" if s["family"] == 6 else f"{s['address']}:{port}"
                              for s in hits}))
    verb = "listening on" if proto == "tcp" else "bound to"
    err = ConflictError(f"host port {port}/{proto} is already in use: {holder} is {verb} {where}",
                        hint="stop that program or move it to another port, or publish another host port "
                             "(network.ports); publishing this one would take its traffic away")
    err.holder = holder
    raise err


class Port:
    def preflight_plan(self, params: Params, plan: Collection[tuple[str, Params]]) -> str | None:
        """A ``host_ip`` the host does not have, nor gets from a bridge of the plan (its
        gateway), would receive nothing: apply's step refuses it once the environment is
        made, and rolls it all back, so plan and apply say so before any step. None when
        the host's addresses cannot be read: apply's step says what it finds."""
        from vbdecl.net import ipam
        from vbdecl.sys import netlink

        host_ip = params.get("host_ip")
        if not host_ip:
            return None
        try:
            wanted = ipaddress.ip_address(host_ip)
            gateways = {ipam.gateway(ipam.parse_subnet(str(p[key]))) for kind, p in plan if kind == "net.bridge"
                        for key in ("subnet", "subnet6") if p.get(key)}
            if wanted in gateways:
                return None
            with netlink.Session() as sess:
                if netlink.is_local(sess.host, host_ip):
                    return None
        except (ValueError, VbdeclError):
            return None
        message, hint = _not_local(host_ip, int(params["host"]), params.get("protocol") or "tcp")
        return f"{message}; {hint}"

    def conflict(self, names: Collection[str], params: Params, state_dir: str | None = None) -> str | None:
        """Who else publishes this host port now: apply's step would fail on it once the
        environment was made (a UX review saw 22 steps rolled back), so plan and apply
        say so before any step. Not an environment of ``names`` (the one applied: its
        replacement frees the port first; those applied before it in the same command
        that let the port go), nor an instance whose namespace is gone (apply collects
        it). None when the table cannot be read: apply's step says what it finds."""
        from vbdecl.engine.atomic import read_json
        from vbdecl.sys import netlink
        from vbdecl.sys.nft import Nft

        proto, port = params.get("protocol") or "tcp", int(params["host"])
        key = {"concat": [proto, port]}
        try:
            items = Nft().list_table(FAMILY, TABLE) or []
        except Exception:
            return None
        holder = next((owner for name, found, owner in _element_owners(items)
                       if name == "ports" and found == key), None)
        if holder is None:
            return None
        try:
            info = (read_json(os.path.join(HOST_DIR, "nat.json")).get("instances") or {}).get(holder) or {}
        except (OSError, ValueError, AttributeError):
            info = {}
        if shared.is_one_of(info, names, state_dir):
            return None
        if info.get("pidns") == shared.pidns() and (not isinstance(info.get("pid"), int)
                                                    or netlink.netns_id(info["pid"]) != info.get("netns")):
            return None
        return (f"host port {port}/{proto} is already published by "
                f"{shared.describe(holder, info, state_dir or '')}: "
                "choose another host port (`vbdecl ls` shows the environments; a `vbdecl run` holds "
                "its ports until it exits)")

    def describe(self, params: Params) -> str:
        where = f"{params['host_ip']}:" if params.get("host_ip") else ""
        return f"publish {where}{params['host']}/{params.get('protocol') or 'tcp'} -> {params['container']}"

    def probe(self, ctx: Context, params: Params, record: Record | None) -> Record | None:
        """The port works when its chain DNATs to the container port AND the ``ports``
        map element for protocol . host port jumps to that chain: without the
        element (deleted by hand, or by someone's ``nft flush``) no packet reaches
        the chain, so a chain alone is not a published port."""
        items = _nft(ctx).list_table(FAMILY, TABLE) or []
        if record is None:
            # Recovery of an apply that died in this step: the chain named after the
            # instance and this port (its map element goes with it on revert).
            names = {i["chain"]["name"] for i in items if "chain" in i}
            proto = params.get("protocol") or "tcp"
            chain = port_chain(ctx.instance, proto, int(params["host"]))
            if chain not in names:
                return None
            host_ip = params.get("host_ip")
            bridge = (ctx.records.get("net.veth") or {}).get("bridge")
            loopback = host_ip is None or ipaddress.ip_address(host_ip).is_loopback
            found = {"chain": chain, "protocol": proto, "host": int(params["host"]),
                     "container": int(params["container"]), "host_ip": host_ip,
                     "localnet": bridge if loopback and bridge else None, "rules_sha256": rules_sha256(items, chain)}
            hairpin = hairpin_chain(ctx.instance, proto, int(params["host"]))
            if hairpin in names:
                found.update(hairpin=hairpin, hairpin_sha256=rules_sha256(items, hairpin))
            return found
        chain = record["chain"]
        if not base_whole(items):
            return None         # the hooked chains that lead to it are gone
        if _map_target(items, "ports", {"concat": [record["protocol"], record["host"]]}) != chain:
            return None
        if record.get("localnet") and not _localnet_is_on(str(record["localnet"])):
            return None         # the bridge was made again: its ports on 127.0.0.1 reach nothing
        forwarding = "off" if _forwarding_off(sorted({"6" if ":" in a else "4" for a in record.get("to") or []})) \
            else record.get("forwarding")
        if forwarding == "off" and "forwarding" not in record:
            return None         # the port reaches nothing from another host (a record from before)
        rules = [i["rule"] for i in items if "rule" in i and i["rule"].get("chain") == chain]
        if not any(_dnat_port(rule) == record["container"] for rule in rules):
            return None
        live = dict(record, forwarding=forwarding) if "forwarding" in record else dict(record)
        if record.get("hairpin") and _map_target(items, hairpin_map(record["protocol"]), record["host"]) \
                != record["hairpin"]:
            live["hairpin"] = None      # the environment reaches its own port no more (drift)
        if "rules_sha256" in record:
            live["rules_sha256"] = rules_sha256(items, chain)
        if record.get("hairpin_sha256"):
            live["hairpin_sha256"] = rules_sha256(items, record["hairpin"])
        if record.get("to"):
            # Each address family published has its own DNAT rule: one deleted by hand
            # (or pointing elsewhere) leaves the port dead over that family, while any
            # other rule still matched. The live record's "to" lists the addresses the
            # chain still reaches, so a missing one is drift that apply repairs (-/+).
            reached = set()
            for rule in rules:
                target = _dnat_target(rule)
                if target is not None and target[1] == record["container"]:
                    reached.add(_canonical(target[0]))
            host_ip = record.get("host_ip")
            to = [a for a in record["to"]
                  if _canonical(a) in reached or (host_ip and (":" in a) != (":" in host_ip))]
            if to != list(record["to"]):
                live["to"] = to
        return live

    def apply(self, ctx: Context, params: Params) -> Record:
        proto = params.get("protocol") or "tcp"
        if proto not in ("tcp", "udp"):
            raise VbdeclError(f"port protocol {proto!r} is not tcp or udp")
        host_port = int(params["host"])
        if not (1 <= host_port <= 65535 and 1 <= int(params["container"]) <= 65535):
            raise VbdeclError(f"port {host_port}:{params['container']} is out of range 1..65535")
        host_ip = params.get("host_ip")
        if host_ip is not None and ":" in host_ip and ipaddress.ip_address(host_ip).is_loopback:
            raise VbdeclError(f"publishing on {host_ip} is not possible: Linux cannot NAT IPv6 loopback "
                              f"traffic to another host", hint="use host_ip 127.0.0.1, or an address of the host")
        a4, a6 = _env_addresses(ctx)
        fams = (["4"] if a4 else []) + (["6"] if a6 else [])
        if host_ip is not None:
            self._check_host_ip(ctx, host_ip, host_port, proto, fams)
        if not ctx.restoring:
            # (a rollback puts back a port the environment had: a listener that started
            # since got none of its traffic then, and takes none of it now; a review's
            # failed update otherwise left the environment without its port)
            _check_free(proto, host_port, host_ip, fams)
        key = f"{ctx.instance}/{proto}/{host_port}"
        bridge = (ctx.records.get("net.veth") or {}).get("bridge")
        loopback = a4 is not None and (host_ip is None or ipaddress.ip_address(host_ip).is_loopback)
        localnet = (str(bridge), key) if loopback and bridge else None
        cmds = port_add(ctx.instance, params, a4, a6)
        hairpin = hairpin_chain(ctx.instance, proto, host_port)
        made_hairpin = any(c.get("add", {}).get("chain", {}).get("name") == hairpin for c in cmds)
        try:
            items = _add(ctx, key, cmds, fams, f"publishing port {host_port}/{proto}", localnet=localnet)
        except ConflictError as err:
            conflict = ConflictError(f"host port {host_port}/{proto} is already published by "
                                     f"{err.holder or 'another environment'}",
                                     hint="choose another host port; `vbdecl ls` shows the environments, "
                                          "and a `vbdecl run` holds its ports until it exits")
            conflict.holder = err.holder
            raise conflict from err
        chain = port_chain(ctx.instance, proto, host_port)
        record = {"chain": chain, "protocol": proto, "host": host_port, "container": int(params["container"]),
                  "host_ip": params.get("host_ip"), "localnet": localnet[0] if localnet else None,
                  "to": [a for a in (a4, a6) if a], "forwarding": "on", "rules_sha256": rules_sha256(items, chain)}
        if made_hairpin:
            record.update(hairpin=hairpin, hairpin_sha256=rules_sha256(items, hairpin))
        return record

    @_session
    def _check_host_ip(self, ctx: Context, host_ip: str, port: int, proto: str, fams: list[str]) -> None:
        """A port published on an address the environment cannot answer for, or that
        the host does not have, would receive nothing: an error, never a silent no-op."""
        from vbdecl.ops.net import _sess
        from vbdecl.sys import netlink

        fam = "6" if ":" in host_ip else "4"
        if fam not in fams:
            raise VbdeclError(f"port {port}/{proto} is published on the IPv{fam} address {host_ip}, but the "
                              f"environment has no IPv{fam} address to forward it to",
                              hint="set network.subnet6 to give the environment an IPv6 address, or "
                                   "publish on an IPv4 host_ip" if fam == "6" else
                                   "publish on an IPv6 host_ip")
        if not netlink.is_local(_sess(ctx).host, host_ip):
            message, hint = _not_local(host_ip, port, proto)
            raise VbdeclError(message, hint=hint)

    def revert(self, ctx: Context, record: Record) -> None:
        from vbdecl.sys import netlink

        key = f"{ctx.instance}/{record['protocol']}/{record['host']}"
        _remove(ctx, key, port_delete(ctx.instance, record["protocol"], record["host"],
                                      hairpin=bool(record.get("hairpin"))),
                f"removing published port {record['host']}/{record['protocol']}",
                localnet_key=key if record.get("localnet") else None)
        if record["protocol"] == "udp":
            # its flows' NAT lives on in their conntrack entries: an unpublished port took
            # datagrams for as long as its clients kept sending, to an address the
            # environment may have left (records before "to": its addresses now)
            now = [(ctx.records.get(rid) or {}).get("address") for rid in ("net.address", "net.address6")]
            for address in record.get("to") or now:
                if address:
                    netlink.conntrack_forget_udp(address, int(record["container"]))

    def update(self, ctx: Context, params: Params, record: Record) -> Record:
        self.revert(ctx, record)
        return self.apply(ctx, params)

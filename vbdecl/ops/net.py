"""Network ops: bridge, veth, addresses, default routes, loopback.

Kinds: ``net.bridge``, ``net.veth``, ``net.address``, ``net.route``,
``net.loopback`` (docs/plan-format.md). They run on the host, in the
vbdecl process; the environment's side is reached through a netlink socket
opened inside its network namespace (``ctx.env_pid``). Shared allocations
(bridge users, address leases) live in ``<state_root>/net.{0,1}.json`` under the
global lock (:mod:`vbdecl.net.shared`); an address is also claimed host-wide, for
the environments of other state roots on the same bridge, as an alternative name
of the veth (:class:`_Claim`).

Ownership: the bridge carries the alias ``vbdecl``; the veth's host end is
named from the instance id; leases name their instance. A revert removes
only what its record names, checks live state first, and tolerates objects
that went away with the environment's namespace.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import threading
import time
from collections.abc import Callable, Collection, Iterator
from typing import Any, TypeVar, cast

from vbdecl.errors import ConflictError, RuntimeSetupError, VbdeclError
from vbdecl.net import ipam, shared
from vbdecl.ops import register
from vbdecl.ops.base import Context, Params, Record

BRIDGE_ALIAS = "vbdecl"
INNER = "eth0"
# The device group of every veth vbdecl makes: the guard's table drops what comes
# from one that has no guard (yet: a veth made again in a live environment, until
# its net.guard lands), ops.guard.
GUARDED_GROUP = 0x7664


def env_mac(instance: str) -> str:
    """The MAC of an environment's eth0: the host's choice, not the environment's (the
    guard pins it; a review's process set its new eth0 to a neighbour's MAC before the
    guard read it), locally administered, from the instance id."""
    import zlib

    return "02:76:" + ":".join(f"{b:02x}" for b in zlib.crc32(instance.encode()).to_bytes(4, "big"))

F = TypeVar("F", bound=Callable[..., Any])

for _kind, _cls in (("net.bridge", "Bridge"), ("net.veth", "Veth"), ("net.address", "Address"),
                    ("net.route", "Route"), ("net.loopback", "Loopback")):
    register(_kind, f"vbdecl.ops.net:{_cls}")
register("net.guard", "vbdecl.ops.guard:Guard")


def _nl() -> Any:
    from vbdecl.sys import netlink

    return netlink


def _sess(ctx: Context) -> Any:
    """The netlink session of this thread's op call (see :func:`_session`)."""
    sess = ctx.extra.get(f"net.session.{threading.get_ident()}")
    if sess is None:
        raise RuntimeError("net op called outside _session()")
    return sess


def _session(fn: F) -> F:
    """Give an op method a netlink session of its own thread.

    In the main thread (the CLI) the session is kept in ``ctx.extra`` for the
    next ops of the same command, so sockets are opened once per command;
    :func:`release` (or dropping the context) closes it. In other threads a
    session lives for one call: pyroute2 binds its sockets to threads.
    """
    import functools

    @functools.wraps(fn)
    def wrapper(self: Any, ctx: Context, *args: Any) -> Any:
        key = f"net.session.{threading.get_ident()}"
        if ctx.extra.get(key) is not None:
            return fn(self, ctx, *args)
        sess = _nl().Session()
        ctx.extra[key] = sess
        if threading.current_thread() is threading.main_thread():
            return fn(self, ctx, *args)
        try:
            return fn(self, ctx, *args)
        finally:
            ctx.extra.pop(key, None)
            sess.close()

    if fn.__name__ != "revert":
        return cast(F, wrapper)

    @functools.wraps(fn)
    def reverting(self: Any, ctx: Context, *args: Any) -> Any:
        try:
            return wrapper(self, ctx, *args)
        finally:
            # a socket pins its namespace: never keep the dying environment's alive
            sess = ctx.extra.get(f"net.session.{threading.get_ident()}")
            if sess is not None:
                sess.drop_envs()
    return cast(F, reverting)


def release(ctx: Context) -> None:
    """Close the sockets this context's network ops keep (netlink, nftables), and
    let go of its bridges."""
    let_bridges_go(ctx.instance)
    for key in [k for k in ctx.extra if k.startswith("net.session.")]:
        ctx.extra.pop(key).close()
    nft = ctx.extra.pop("nft", None)
    if nft is not None:
        nft.close()


def tidy(ctx: Context) -> None:
    """After the reverts of a vbdecl killed in a network step (a run's janitor): the
    state root's shared network state with its dead instance, and the lock, left with
    nothing of anyone's in them (a kill review found global.lock and net.0.json left)."""
    root = shared.state_root_of(ctx.state_dir)
    if not any((root / name).exists() for name in ("global.lock", *shared.SLOTS)):
        return
    with shared.locked(ctx.state_dir) as st:    # (which removes them when nothing is left)
        shared.collect(st, _ns_alive)
        for name, entry in list(st["bridges"].items()):
            if not entry.get("users") and not os.path.exists(f"/sys/class/net/{name}"):
                del st["bridges"][name]     # (its bridge gone: as _join forgets one)


def _env_pid(ctx: Context, what: str) -> int:
    if ctx.env_pid is None:
        raise RuntimeSetupError(f"{what} needs the environment's network namespace, but it has no live process",
                                hint="the environment must be started before its network is configured")
    return ctx.env_pid


def _alive(ctx: Context, record: Record) -> bool:
    """Is the environment namespace the record was made in still there?"""
    ns = record.get("netns")
    return ns is not None and _nl().netns_id(ctx.env_pid) == ns


def _ns_alive(pid: Any, netns: Any) -> bool:
    """Is the namespace an instance registered (pid, inode) still there?"""
    return isinstance(pid, int) and _nl().netns_id(pid) == netns


def _inner_index(ctx: Context, ipr: Any, pid: int) -> int:
    key = (pid, _nl().netns_id(pid))
    cache = ctx.extra.setdefault("net.index", {})
    idx = cache.get(key)
    veth = ctx.records.get("net.veth") or {}
    if idx is None and veth.get("peer_index") and veth.get("netns") == key[1]:
        idx = cache[key] = veth["peer_index"]     # net.veth brought it up already
    if idx is None:
        idx = _nl().index_of(ipr, INNER)
        if idx is None:
            raise VbdeclError(f"the environment has no {INNER}: net.veth did not land",
                              hint="apply the environment again; `vbdecl plan` shows drift")
        # the peer of a veth is created down (its flags cannot ride along): up it once
        _nl().link_up(ipr, idx, INNER)
        cache[key] = idx
    return int(idx)


# --- net.bridge -----------------------------------------------------------------

# The host side of an environment's veth (ipam.veth_name)
_VETH = re.compile(r"vb[0-9a-f]{8}h")


# --- the host-wide bridge lock ----------------------------------------------------
#
# Each state root decides under its own lock, and a bridge is shared by every state
# root on the host: a destroy of a bridge's last user in one root, seeing no port
# on it, deleted it between another root's join and that root's veth (a concurrency
# review: 10 of 80 tries, most of those applies rolled back, two cut off). So a
# join, and a veth made again, hold a shared flock on HOST_DIR from before they look
# at the bridge until the veth is on it, and a bridge is deleted only under the
# exclusive one; the lock order is this lock, then the state root's.
#
# The holds are the process's, by instance, not a Context's: the executor makes a new
# Context when its records are reset (a rollback), and a hold left in the one before
# made the bridge's revert wait for its own process.
_HELD: dict[str, int] = {}


def _hold_bridges(ctx: Context) -> None:
    """Keep every bridge from being deleted until :func:`let_bridges_go`. (Not for a
    user who is not root: such a one changes no bridge of the host, and is told so by
    the step, not by a lock in root's directory.)"""
    if ctx.instance not in _HELD and os.geteuid() == 0:
        from vbdecl.ops.nat import _host_dir
        from vbdecl.sys.flock import lock_dir

        _HELD[ctx.instance] = lock_dir(_host_dir(), shared=True)


def let_bridges_go(instance: str | None = None) -> None:
    """Let go of the hold of ``instance`` (None: every hold of this process)."""
    for inst in [instance] if instance is not None else list(_HELD):
        fd = _HELD.pop(inst, None)
        if fd is not None:
            os.close(fd)


@contextlib.contextmanager
def _may_delete_bridges() -> Iterator[None]:
    """The exclusive bridge lock. This process's own holds are let go first: it would
    wait for itself (a rollback between its bridge and veth steps)."""
    from vbdecl.ops.nat import _host_dir
    from vbdecl.sys.flock import lock_dir

    let_bridges_go()
    if os.geteuid() != 0:
        yield
        return
    fd = lock_dir(_host_dir(), shared=False)
    try:
        yield
    finally:
        os.close(fd)


def _set_back(st: dict[str, Any], name: str, prior: dict[str, Any] | None) -> None:
    """The shared state's entry of bridge ``name`` as it was before a failed apply."""
    if prior is None:
        st["bridges"].pop(name, None)
    else:
        st["bridges"][name] = prior


class Bridge:
    def describe(self, params: Params) -> str:
        nets = ", ".join(n for n in (params.get("subnet"), params.get("subnet6")) if n)
        return f"bridge {params['bridge']} ({nets}), created if missing"

    def conflict(self, names: Collection[str], params: Params, state_dir: str | None = None) -> str | None:
        """A bridge to make on a subnet that overlaps a host route: apply's step refuses
        it once the environment is made, and rolls it all back, so plan and apply say so
        before any step (a network review saw plan accept it). Not a route of a bridge
        vbdecl made that only environments of ``names`` use (a bridge renamed, the subnet
        kept: the old one goes before the new one is made). A bridge that exists is
        joined, and its step says what it finds; so does a check that cannot run."""
        nl = _nl()
        try:
            nets = [ipam.parse_subnet(s) for s in (params.get("subnet"), params.get("subnet6")) if s]
            st = shared.read(state_dir) if state_dir else {}
            instances = st.get("instances") or {}
            leaving = {bridge for bridge, entry in (st.get("bridges") or {}).items()
                       if entry.get("created") and entry.get("users")
                       and all(shared.is_one_of(instances.get(u) or {}, names, state_dir) for u in entry["users"])}
            with nl.Session() as sess:
                if nl.link(sess.host, params["bridge"]) is not None:
                    return None
                for net in nets:
                    self._check_overlap(nl, sess.host, net, params["bridge"], leaving)
        except ConflictError as err:
            return f"{err.message}; {err.hint}"
        except (ValueError, VbdeclError, OSError):
            return None
        return None

    @_session
    def probe(self, ctx: Context, params: Params, record: Record | None) -> Record | None:
        nl = _nl()
        found = nl.link(_sess(ctx).host, params["bridge"])
        if found is None or found["kind"] != "bridge":
            return None
        if record is None:
            # Recovery of an apply that died in this step: the bridge is shared, and
            # this instance owns only its membership (then revert drops it, and the
            # bridge with its last user). A bridge it does not use is none of its own.
            entry = (shared.read(ctx.state_dir).get("bridges") or {}).get(params["bridge"]) or {}
            if ctx.instance not in (entry.get("users") or []):
                return None
            return {"bridge": params["bridge"], "instance": ctx.instance,
                    "created": bool(entry.get("created")), "index": found["index"]}
        if not found["up"]:
            # set down (by hand): it carries nothing. Drift on "up" (set up again in
            # place, update); a record from before it kept "up": the bridge is gone
            return dict(record, bridge=params["bridge"], index=found["index"], up=False) \
                if "up" in record else None
        probed = dict(record, bridge=params["bridge"], index=found["index"])
        if "gateways" in record:
            # a gateway deleted by hand: no route to the subnet from the host, no NAT
            # (drift on "gateways", added again in place; older records do not say)
            have = {f"{a}/{p}" for a, p, _ in nl.addresses(_sess(ctx).host, index=found["index"])}
            probed["gateways"] = [gw for gw in record["gateways"] if gw in have]
        if record.get("mtu"):
            # lowered by hand, or by a port's (a network review: frames larger than it
            # between the environments were dropped, and no drift said so); set back in place
            probed["mtu"] = found["mtu"]
        return probed

    @_session
    def apply(self, ctx: Context, params: Params) -> Record:
        nl = _nl()
        name = ipam.check_ifname(params["bridge"], "bridge")
        nets = [ipam.parse_subnet(s) for s in (params.get("subnet"), params.get("subnet6")) if s]
        ipr = _sess(ctx).host
        _hold_bridges(ctx)      # (until the veth is on it: Veth.apply lets go)
        with shared.locked(ctx.state_dir) as st:
            try:
                return self._join(ctx, params, nl, ipr, st, name, nets)
            except BaseException:
                let_bridges_go(ctx.instance)
                # a failed join leaves no record of this instance that holds nothing (an
                # unprivileged review found a failed run's, with a dead pid, kept)
                if not any(ctx.instance in (b.get("users") or []) for b in st["bridges"].values()) and \
                        not any(ctx.instance in lease.values() for lease in st["leases"].values()):
                    shared.forget(st, ctx.instance)
                raise

    def _join(self, ctx: Context, params: Params, nl: Any, ipr: Any, st: dict[str, Any], name: str,
              nets: list[Any]) -> Record:
        shared.collect(st, _ns_alive)
        for other, stale in list(st["bridges"].items()):
            # no user and no bridge (an apply killed right before making it): forget it
            if not stale.get("users") and nl.link(ipr, other) is None:
                del st["bridges"][other]
        shared.register(st, ctx.instance, ctx.env_pid, nl.netns_id(ctx.env_pid),
                        shared.owner(ctx.name, ctx.state_dir))
        entry = st["bridges"].get(name)
        known = nl.link(ipr, name)
        if known is not None and known["kind"] == "bridge" and known.get("alias") == BRIDGE_ALIAS:
            # a bridge an older vbdecl made: its MAC kept from now on, and its entry
            # told the MTU it carries (bridge_create and the first user do both now)
            nl.keep_address(ipr, known["index"], name)
            if entry is not None and entry.get("users") and "mtu" not in entry:
                entry["mtu"] = known.get("mtu") or shared.DEFAULT_MTU
        # (an MTU of its own only matters to the environments on the bridge now)
        mismatches = [m for m in shared.subnet_mismatches(entry or {}, params)
                      if m[0] != "mtu" or (entry or {}).get("users")]
        if entry is not None and entry.get("users") and not mismatches and all(
                entry.get(k) == params.get(k) for k in ("subnet", "subnet6")):
            # fast path: a bridge in use, set up by its first user; just join it
            found = known
            if found is not None and found["kind"] == "bridge":
                self._up(nl, ipr, found, entry)
                shared.add_user(entry["users"], ctx.instance)
                _wants_subnet6(entry, ctx.instance, params)
                return {"bridge": name, "instance": ctx.instance, "created": False, "up": True,
                        "gateways": _gateways(nets), "mtu": _own_mtu(entry, found)}
        if mismatches:
            key, served, asked = mismatches[0]
            if key == "mtu":
                raise ConflictError(f"bridge {name} carries mtu {served}, but this environment asks "
                                    f"for mtu {asked}",
                                    hint=f"use network.mtu {served} on bridge {name} (every environment "
                                         "on a bridge needs the same), or another bridge name")
            raise ConflictError(f"bridge {name} serves {served}, but this environment asks for {asked}",
                                hint=f"use subnet {served} on bridge {name}, or another bridge name")
        found = known
        if found is not None and found["kind"] != "bridge":
            raise ConflictError(f"interface {name} exists and is not a bridge (it is a {found['kind'] or 'device'})",
                                hint="choose another network.bridge name")
        first_user = entry is None or not entry.get("users")
        if first_user:
            for net in nets:
                self._check_overlap(nl, ipr, net, name)
        created = upped = False
        prior = st["bridges"].get(name)
        if found is None:
            # (an entry whose bridge vanished keeps its users: they re-join)
            entry = {"users": [], **(entry or {}), "created": True, "added": []}
            # On record before it exists: a vbdecl killed while it makes it leaves a
            # bridge that recovery knows (this instance a user of it: probe) and removes
            st["bridges"][name] = {**entry, "users": [*entry["users"], ctx.instance]}
            shared.flush(st)
            try:
                index = nl.bridge_create(ipr, name, mtu=params.get("mtu"), alias=BRIDGE_ALIAS)
                created = True
            except ConflictError:
                # made meanwhile (another state root's apply, under its own lock): join it
                _set_back(st, name, prior)
                found = nl.link(ipr, name)
                if found is None or found["kind"] != "bridge":
                    raise
                entry = {**(prior or {}), "created": False, "users": list((prior or {}).get("users") or []),
                         "added": []}
            except BaseException:
                _set_back(st, name, prior)
                raise
        if found is not None:
            index = found["index"]
            if entry is None:
                # found, not known to this state root: at the end it is deleted only
                # if vbdecl made it (alias) and no other port is on it
                entry = {"created": False, "users": [], "added": []}
            upped = self._up(nl, ipr, found, entry)
        added: list[tuple[str, int]] = []
        try:
            _add_gateways(nl, ipr, index, name, nets, added)
            if not created:
                entry["added"] += [f"{gw}/{plen}" for gw, plen in added]
        except BaseException:
            if created:
                nl.link_delete(ipr, index, name)
            else:       # a bridge found: as it was found (the review saw "nothing was changed")
                for gw, plen in added:
                    with contextlib.suppress(VbdeclError):
                        nl.address_delete(ipr, index, gw, plen)
                if upped:
                    with contextlib.suppress(VbdeclError):
                        nl.link_down(ipr, index, name)
            _set_back(st, name, prior)
            raise
        entry["subnet"] = entry.get("subnet") or params.get("subnet")
        entry["subnet6"] = entry.get("subnet6") or params.get("subnet6")
        if first_user:
            entry["mtu"] = params.get("mtu") or shared.DEFAULT_MTU
            entry["wants6"] = []
        shared.add_user(entry["users"], ctx.instance)
        _wants_subnet6(entry, ctx.instance, params)
        st["bridges"][name] = entry
        return {"bridge": name, "instance": ctx.instance, "created": created, "up": True,
                "gateways": _gateways(nets), "mtu": _own_mtu(entry, found if not created else None)}

    @staticmethod
    def _up(nl: Any, ipr: Any, found: dict[str, Any], entry: dict[str, Any]) -> bool:
        """A bridge found down would carry nothing (nor route to its subnet): up it,
        and remember to give it back down with its last user. Whether it did."""
        if found["up"]:
            return False
        nl.link_up(ipr, found["index"], found["name"])
        if not entry.get("created"):
            entry["upped"] = True
        return True

    @staticmethod
    def _check_overlap(nl: Any, ipr: Any, net: ipam.Network, name: str,
                       leaving: Collection[str] = ()) -> None:
        """Refuse ``net`` where it overlaps a host route but on ``name`` or the bridges
        ``leaving`` (which go before ``name`` is made)."""
        family = nl.AF_INET if net.version == 4 else nl.AF_INET6
        routes = [(prefix, dev) for prefix, dev in nl.routes(ipr, family) if dev not in leaving]
        hit = ipam.overlapping_route(net, routes, name)
        if hit is not None:
            key = "subnet" if net.version == 4 else "subnet6"
            raise ConflictError(f"subnet {net} overlaps the host route {hit[0]} on {hit[1]}",
                                hint=f"choose a subnet no host interface uses (network.{key})")

    @_session
    def revert(self, ctx: Context, record: Record) -> None:
        nl = _nl()
        name = record["bridge"]
        ipr = _sess(ctx).host
        with _may_delete_bridges(), shared.locked(ctx.state_dir) as st:
            shared.forget(st, ctx.instance)
            entry = st["bridges"].get(name)
            if entry is None:
                return
            shared.remove_user(entry["users"], ctx.instance)
            if entry["users"]:
                _wants_subnet6(entry, ctx.instance, {})
                self._drop_unwanted_subnet6(nl, ipr, name, entry)
                return
            found = nl.link(ipr, name)
            if found is not None and found["kind"] == "bridge":
                others = self._other_ports(nl, ipr, found["index"], ipam.veth_name(ctx.instance))
                if any(_VETH.fullmatch(port) for port in others):
                    # still in use by environments of another state root: it stays up for
                    # them, with the gateways their addresses need (their claims say which,
                    # BRIDGE@ADDRESS); ours that none needs goes, as nobody would take it
                    # off later (a review found one left, and its route, for good)
                    self._drop_unneeded_gateways(nl, ipr, found["index"], name, entry.get("added", []),
                                                 others)
                elif not others and (found.get("alias") == BRIDGE_ALIAS
                                     or (entry.get("created") and not found.get("alias"))):
                    # made by vbdecl (by this state root or another; or by this one, killed
                    # before it could name it): unused now, so it goes
                    nl.link_delete(ipr, found["index"], name)
                else:
                    # found (or given a port of someone else's meanwhile): given back the
                    # addresses vbdecl added and the state it was found in
                    for cidr in entry.get("added", []):
                        addr, _, plen = cidr.partition("/")
                        nl.address_delete(ipr, found["index"], addr, int(plen))
                    if entry.get("upped"):
                        nl.link_down(ipr, found["index"], name)
            del st["bridges"][name]

    @staticmethod
    def _drop_unwanted_subnet6(nl: Any, ipr: Any, name: str, entry: dict[str, Any]) -> None:
        """The IPv6 subnet of a bridge that none of its users of this state root asks for
        any more: its gateway goes (if vbdecl added it), and the entry serves it no more,
        so another user may ask for another one (a network review found the first one's
        kept until the bridge went, and every other subnet6 refused meanwhile). An entry
        from before users' subnet6 were kept ("wants6") is left as it is."""
        if entry.get("wants6") != [] or not entry.get("subnet6"):
            return
        net = ipam.parse_subnet(str(entry["subnet6"]))
        cidr = f"{ipam.gateway(net)}/{net.prefixlen}"
        found = nl.link(ipr, name)
        if found is not None and found["kind"] == "bridge" and (entry.get("created") or cidr in entry.get("added", [])):
            # (not while an environment of another state root on the bridge claims an
            # address in it: a review's destroy took the gateway from one such)
            ports = [ln["name"] for ln in nl.links(ipr) if ln["master"] == found["index"]]
            Bridge._drop_unneeded_gateways(nl, ipr, found["index"], name, [cidr], ports)
        entry["subnet6"] = None
        entry["added"] = [a for a in entry.get("added", []) if a != cidr]

    @staticmethod
    def _drop_unneeded_gateways(nl: Any, ipr: Any, index: int, bridge: str, added: list[str],
                                ports: list[str]) -> None:
        """Take the gateway addresses in ``added`` off the bridge, but those of a network
        that an address claimed by one of ``ports`` (veths of other state roots) is in."""
        claimed = []
        for link in nl.links(ipr):
            if link["name"] in ports:
                for alt in link.get("altnames") or []:
                    if alt.startswith(bridge + "@"):
                        with contextlib.suppress(ValueError):
                            claimed.append(ipaddress.ip_address(alt[len(bridge) + 1:].replace("-", ":")))
        for cidr in added:
            net = ipaddress.ip_interface(cidr).network
            if not any(addr in net for addr in claimed):
                addr, _, plen = cidr.partition("/")
                nl.address_delete(ipr, index, addr, int(plen))

    @staticmethod
    def _other_ports(nl: Any, ipr: Any, index: int, mine: str) -> list[str]:
        """Ports on the bridge other than this environment's veth. A vbdecl veth
        of an environment whose namespace is being dismantled lingers for a few
        milliseconds: wait for those (bounded) before calling the bridge in use."""
        import time

        deadline = time.monotonic() + 0.3
        while True:
            others = [ln["name"] for ln in nl.links(ipr) if ln["master"] == index and ln["name"] != mine]
            if not others or not all(_VETH.fullmatch(n) for n in others):
                return others
            if time.monotonic() > deadline:
                return others
            time.sleep(0.02)

    @_session
    def update(self, ctx: Context, params: Params, record: Record) -> Record:
        """A bridge set down by hand is set up again, and a gateway deleted by hand added
        again, in place (its ports, addresses and the environments on it stay); anything
        else is made anew."""
        nl = _nl()
        ipr = _sess(ctx).host
        with shared.locked(ctx.state_dir) as st:
            entry = st["bridges"].get(record["bridge"])
            found = nl.link(ipr, record["bridge"])
            # (the entry may serve a subnet6 that an environment gone since asked for: a
            # review's repair made the bridge anew under the last user's veth for that)
            if entry is not None and found is not None and found["kind"] == "bridge" and not [
                    m for m in shared.subnet_mismatches(entry, params) if m[0] != "mtu"] and all(
                    entry.get(k) for k in ("subnet", "subnet6") if params.get(k)):
                self._up(nl, ipr, found, entry)
                nets = [ipam.parse_subnet(s) for s in (params.get("subnet"), params.get("subnet6")) if s]
                _add_gateways(nl, ipr, found["index"], found["name"], nets, [])
                _wants_subnet6(entry, ctx.instance, params)
                self._drop_unwanted_subnet6(nl, ipr, record["bridge"], entry)
                # the manifest's MTU (a review's change of it set the old one back, and a
                # later apply "repaired" the bridge to that); plan refuses it on a bridge
                # that other environments share
                mtu = params.get("mtu") or record.get("mtu")
                if params.get("mtu") and entry.get("mtu") != params["mtu"]:
                    entry["mtu"] = params["mtu"]
                if mtu and found["mtu"] != mtu:
                    nl.link_up(ipr, found["index"], found["name"], mtu=mtu)
                return dict(record, up=True, gateways=_gateways(nets),
                            **({"mtu": _own_mtu(entry, found)} if "mtu" in record else {}))
        self.revert(ctx, record)
        return self.apply(ctx, params)


def _own_mtu(entry: dict[str, Any], found: dict[str, Any] | None) -> int | None:
    """The MTU a bridge of vbdecl's carries for its environments (its entry's), to see it
    lowered (Bridge.probe); None for a bridge someone else made, whose MTU is theirs."""
    ours = found is None or found.get("alias") == BRIDGE_ALIAS or bool(entry.get("created"))
    return int(entry["mtu"]) if ours and entry.get("mtu") else None


def _wants_subnet6(entry: dict[str, Any], instance: str, params: Params) -> None:
    """Note whether ``instance`` asks bridge ``entry`` for its IPv6 subnet (the entry's
    "wants6": Bridge._drop_unwanted_subnet6), where the entry keeps that."""
    if "wants6" not in entry:
        return
    wants = [i for i in entry["wants6"] if i != instance]
    entry["wants6"] = [*wants, instance] if params.get("subnet6") else wants


def _add_gateways(nl: Any, ipr: Any, index: int, name: str, nets: list[ipam.Network],
                  added: list[tuple[str, int]]) -> None:
    """Give bridge ``name`` the gateway address of each of ``nets`` it lacks, noting each
    in ``added`` as it goes (a failure half-way leaves there what to take off again)."""
    have = {(a, p) for a, p, _ in nl.addresses(ipr, index=index)}
    for net in nets:
        gw = str(ipam.gateway(net))
        if (gw, net.prefixlen) in have:
            continue
        bcast = ipam.broadcast4(gw, net.prefixlen) if net.version == 4 else None
        nl.address_add(ipr, index, gw, net.prefixlen, ifname=name, broadcast=bcast)
        added.append((gw, net.prefixlen))


def _gateways(nets: list[ipam.Network]) -> list[str]:
    """The gateway addresses (CIDR) a bridge serving ``nets`` has."""
    return [f"{ipam.gateway(net)}/{net.prefixlen}" for net in nets]


# --- net.veth -------------------------------------------------------------------

class Veth:
    def describe(self, params: Params) -> str:
        return f"veth pair: host end on bridge {params['bridge']}, {INNER} inside"

    @_session
    def probe(self, ctx: Context, params: Params, record: Record | None) -> Record | None:
        nl = _nl()
        ipr = _sess(ctx).host
        found = nl.link(ipr, ipam.veth_name(ctx.instance))
        if found is None or found["kind"] != "veth":
            return None
        # Detached from its bridge or down (by hand, or a bridge deleted and made
        # again), it is there but the environment is cut off: not working. Drift that
        # says so (a network review read "deleted outside vbdecl" for a veth that was
        # there) where the record can tell (since it keeps "up"), which the repair
        # makes again; else as gone.
        bridge = (record or {}).get("bridge") or params.get("bridge")
        master = nl.index_of(ipr, bridge) if bridge else None
        if master is None or found["master"] != master or not found["up"]:
            if record is None or "up" not in record:
                return None
            on = nl.link_by_index(ipr, found["master"]) if found["master"] else None
            return dict(record, host=found["name"], index=found["index"],
                        bridge=on["name"] if on else None, up=found["up"])
        if record is not None and ctx.env_pid and self._inner_down(ctx):
            # its end inside set down (ip link set eth0 down in the environment): the
            # kernel took its routes and IPv6 addresses, and a repair that adds them
            # back failed on it (a network review), so it is made again with them
            return None
        live = dict(record or {}, host=found["name"], index=found["index"])
        if record is not None and record.get("mtu"):
            live["mtu"] = found["mtu"]      # (lowered by hand: see Bridge.probe; set back in place)
        if record is not None and "bridge_port" in record:
            # (MAC learning back on lets a neighbour's frames steal its traffic; hairpin
            # off, its own published port is out of its reach: set back in place)
            live["bridge_port"] = nl.port_flags(ipr, found["index"], found["name"])
        return live

    @staticmethod
    def _inner_down(ctx: Context) -> bool:
        """The end inside exists and is down (an environment that is gone: not)."""
        try:
            inner = _nl().link(_sess(ctx).env(int(ctx.env_pid or 0)), INNER)
        except VbdeclError:
            return False
        return inner is not None and not inner["up"]

    @_session
    def apply(self, ctx: Context, params: Params) -> Record:
        nl = _nl()
        host = ipam.veth_name(ctx.instance)
        pid = _env_pid(ctx, "net.veth")
        sess = _sess(ctx)
        ipr = sess.host
        _hold_bridges(ctx)      # (held since the join; or, for a veth made again, now)
        try:
            master = nl.index_of(ipr, params["bridge"])
            if master is None:
                raise VbdeclError(f"bridge {params['bridge']} does not exist",
                                  hint="net.bridge must land first; apply again")
            fd = nl.open_netns(pid)
            try:
                ns = os.fstat(fd).st_ino
                mac = env_mac(ctx.instance)
                nl.veth_create(ipr, host, INNER, netns_fd=fd, master=master, mtu=params.get("mtu"),
                               peer_mac=mac, group=GUARDED_GROUP)
                try:
                    nl.pin_port(ipr, nl.index_of(ipr, host), host, mac)
                    with nl.entered(fd):        # (before it is up: see netlink.refuse_routers)
                        nl.refuse_routers(INNER)
                        nl.link_local_from_mac(INNER)
                    # the peer's flags cannot ride along with the creation: up it here
                    peer_index, _ = nl.up_in(fd, INNER)
                except BaseException:
                    self._delete(ipr, host)
                    raise
            finally:
                os.close(fd)
        finally:
            let_bridges_go(ctx.instance)
        ctx.extra.pop("net.index", None)      # a peer made again has a new index
        return {"host": host, "peer": INNER, "peer_index": peer_index, "bridge": params["bridge"], "netns": ns,
                "mtu": params.get("mtu") or shared.DEFAULT_MTU, "up": True, "mac": mac,
                "bridge_port": dict(nl.PORT_FLAGS)}

    @staticmethod
    def _delete(ipr: Any, host: str) -> None:
        nl = _nl()
        found = nl.link(ipr, host)
        if found is not None:
            nl.link_delete(ipr, found["index"], host)

    @_session
    def revert(self, ctx: Context, record: Record) -> None:
        nl = _nl()
        if ctx.extra.get("teardown"):
            # The executor says the environment's namespaces die now (or died):
            # the pair goes with them; deleting a veth costs ~20 ms in the kernel.
            return
        ipr = _sess(ctx).host
        found = nl.link(ipr, record["host"])
        if found is None:
            return  # gone with the environment's namespace
        if found["kind"] != "veth":
            raise ConflictError(f"interface {record['host']} exists and is not owned by vbdecl",
                                hint="it changed since vbdecl made it; inspect it with `ip -d link show`")
        # (made again next, most often: its bridge is not another root's to delete
        # meanwhile; the next Veth.apply, or this bridge's revert, lets go)
        _hold_bridges(ctx)
        nl.link_delete(ipr, found["index"], record["host"])

    @_session
    def update(self, ctx: Context, params: Params, record: Record) -> Record:
        nl = _nl()
        ipr = _sess(ctx).host
        found = nl.link(ipr, record["host"])
        if found is None:
            raise VbdeclError(f"veth {record['host']} is gone", hint="apply again to recreate the environment")
        if "bridge_port" in record:
            # (its flags changed by hand, or attached again: the bridge's defaults, and no
            # static entry; pinning again is the same where nothing changed)
            nl.pin_port(ipr, found["index"], record["host"], record["mac"])
        mtu = params.get("mtu") or record.get("mtu")
        if mtu and (found["mtu"] != mtu or params.get("mtu")):
            nl.link_up(ipr, found["index"], record["host"], mtu=mtu)
        if mtu and ctx.env_pid:
            # the end inside too (a review's update changed the host's end only: frames
            # above the old MTU from inside were dropped without a word)
            env = _sess(ctx).env(int(ctx.env_pid))
            inner = nl.link(env, INNER)
            if inner is not None and inner["mtu"] != mtu:
                nl.link_up(env, inner["index"], INNER, mtu=mtu)
        return dict(record, mtu=mtu) if "mtu" in record else dict(record)


# --- net.address ----------------------------------------------------------------

class _Claim:
    """An address on a bridge, claimed host-wide as an alternative name of the
    environment's veth (``vbdecl0@10.88.0.5``; an IPv6 address with ``-`` for ``:``).
    Leases keep addresses apart within one state root; environments of other
    state roots on the same bridge see only the kernel's objects. Alternative
    names are unique in the host's namespace, so a claim is taken atomically; a
    revert (a teardown's too) takes it off, and the kernel removes it with the veth
    when the environment's network namespace goes."""

    def __init__(self, ipr: Any, instance: str) -> None:
        nl = _nl()
        self.ipr = ipr
        veth = nl.link(ipr, ipam.veth_name(instance))
        master = nl.link_by_index(ipr, veth["master"]) if veth and veth["master"] else None
        self.index: int | None = veth["index"] if veth and master else None
        self.bridge = str(master["name"]) if master else ""
        self.held: list[str] = list(veth["altnames"]) if veth and master else []

    def name(self, address: str) -> str:
        return f"{self.bridge}@{address.replace(':', '-')}"

    def take(self, address: str, patience: float = 0.0) -> bool:
        """Claim ``address`` (True), unless another veth holds it. ``patience``: how
        long to wait for a veth whose namespace has just died (the kernel removes
        it a moment later)."""
        name = self.name(address)
        if self.index is None or name in self.held:
            return True
        deadline = time.monotonic() + patience
        while not _nl().altname_add(self.ipr, self.index, name):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        self.held.append(name)
        return True

    def holder(self, address: str) -> str:
        """Who holds ``address``, in words for a conflict."""
        found = _nl().link(self.ipr, self.name(address))
        if found is None:
            return "an environment that is going away"
        veth = str(found["name"])
        if veth.startswith("vb") and veth.endswith("h"):    # ipam.veth_name
            return f"environment instance vb-{veth[2:-1]} (veth {veth}), of another state root"
        return f"interface {veth}"

    def drop(self, address: str) -> None:
        if self.index is not None and self.name(address) in self.held:
            _nl().altname_delete(self.ipr, self.index, self.name(address))
            self.held.remove(self.name(address))

    def drop_others(self, address: str) -> None:
        """Take off this veth's other claims on the bridge of ``address``'s family (an
        update that died between claiming a new address and recording it)."""
        v6 = ":" in address
        for name in list(self.held):
            other = name[len(self.bridge) + 1:]
            if name.startswith(self.bridge + "@") and ("-" in other) == v6 and name != self.name(address):
                self.drop(other.replace("-", ":"))


class Address:
    def describe(self, params: Params) -> str:
        addr = params.get("address") or "auto"
        return f"address {addr} in {params['subnet']} on {INNER}"

    def conflict(self, names: Collection[str], params: Params, state_dir: str | None = None) -> str | None:
        """Who else of this state root leases the explicit address ``params`` asks for:
        apply's step refuses it once the environment's veth is made (and the other
        environments on the bridge lose it for a moment), so plan and apply say so
        before any step (a network review). Not an environment of ``names`` (the one
        applied; those applied before it in the same command that let it go), nor an
        instance whose namespace is gone (apply collects it)."""
        wanted = params.get("address") or "auto"
        if wanted == "auto":
            return None
        try:
            address = str(ipaddress.ip_address(wanted))
            st = shared.read(state_dir or "")
            holder = ((st.get("leases") or {}).get(str(ipam.parse_subnet(params["subnet"]))) or {}).get(address)
        except (OSError, ValueError, VbdeclError):
            return None     # (apply's step says what is wrong with it)
        info = (st.get("instances") or {}).get(holder) or {} if holder else {}
        if holder is None or (info.get("name") in names and not info.get("run")) \
                or not _ns_alive(info.get("pid"), info.get("netns")):
            return None
        return (f"address {address} is already in use by {shared.describe(holder, info)}: choose "
                "another address, or leave it to vbdecl (network.address: auto)")

    @staticmethod
    def releases(theirs: Params, params: Params) -> bool:
        """Whether an environment applied with ``theirs`` lets go of the explicit address
        ``params`` asks for (cmd_plan.source_problems): it asks for another explicit one.
        Not for an automatic one: one it has keeps its lease, and one it is given anew
        may be this very address (a review of the first version passed such a plan, and
        the apply refused it)."""
        asked = theirs.get("address") or "auto"
        return asked != "auto" and asked != (params.get("address") or "auto")

    @_session
    def probe(self, ctx: Context, params: Params, record: Record | None) -> Record | None:
        if record is None:
            return self._in_flight(ctx, params)
        if not _alive(ctx, record):
            return None
        nl = _nl()
        ipr = _sess(ctx).env(_env_pid(ctx, "net.address"))
        have = {(a, p) for a, p, _ in nl.addresses(ipr)}
        if (record["address"], record["prefixlen"]) not in have:
            return None
        live = dict(record)
        if record.get("claim"):
            # The claim keeps the address this environment's across state roots: one taken
            # off by hand let another root's environment be given the address, and this
            # one's published ports then reached that one (a network review).
            holder = nl.link(_sess(ctx).host, record["claim"])
            mine = ipam.veth_name(ctx.instance)
            live["claim"] = record["claim"] if holder is not None and holder["name"] == mine else \
                None if holder is None else f"{record['claim']} of {holder['name']}"
        return live

    @staticmethod
    def _in_flight(ctx: Context, params: Params) -> Record | None:
        """Recovery of an apply that died in this step (no record journaled): the
        lease that names this instance in the shared state, with the environment's
        namespace, so that revert releases the lease and removes the address."""
        net = ipam.parse_subnet(params["subnet"])
        leases = (shared.read(ctx.state_dir).get("leases") or {}).get(str(net)) or {}
        mine = [a for a, who in leases.items() if who == ctx.instance]
        if not mine:
            return None
        return {"address": mine[0], "prefixlen": net.prefixlen, "subnet": str(net), "ifname": INNER,
                "family": net.version, "netns": _nl().netns_id(ctx.env_pid)}

    @_session
    def apply(self, ctx: Context, params: Params) -> Record:
        nl = _nl()
        net = ipam.parse_subnet(params["subnet"])
        pid = _env_pid(ctx, "net.address")
        sess = _sess(ctx)
        family = nl.AF_INET if net.version == 4 else nl.AF_INET6
        with shared.locked(ctx.state_dir) as st:
            shared.collect(st, _ns_alive)
            leases: dict[str, str] = st["leases"].setdefault(str(net), {})
            # who holds each address, in words for a conflict (our own lease stays our id)
            taken = {a: who if who == ctx.instance else shared.describe(who, st["instances"].get(who))
                     for a, who in leases.items()}
            for a, _p, _i in nl.addresses(sess.host, family=family):
                taken.setdefault(a, "an address on the host")
            wanted = params.get("address") or "auto"
            mine = [a for a, who in leases.items() if who == ctx.instance]
            claim = _Claim(sess.host, ctx.instance)
            if wanted != "auto" or mine:
                addr = str(ipam.check_explicit(net, wanted, taken, ctx.instance)) if wanted != "auto" else mine[0]
                if not claim.take(addr, patience=1.0):
                    raise ConflictError(f"address {addr} on bridge {claim.bridge} is held by {claim.holder(addr)}",
                                        hint="choose another address, or leave it to vbdecl (network.address: "
                                             "auto); `ip link show` lists each veth's claims as altnames")
            else:
                while True:
                    addr = str(ipam.allocate(net, ctx.instance, taken))
                    if claim.take(addr):
                        break
                    taken[addr] = claim.holder(addr)
            ipr = sess.env(pid)
            index = _inner_index(ctx, ipr, pid)
            bcast = ipam.broadcast4(addr, net.prefixlen) if net.version == 4 else None
            try:
                nl.address_add(ipr, index, addr, net.prefixlen, ifname=INNER, broadcast=bcast)
            except BaseException:
                claim.drop(addr)
                raise
            leases[addr] = ctx.instance
        claim.drop_others(addr)
        nl.neighbours_forget(sess.host, addr)
        try:    # (the other environments on the bridge keep an entry with the MAC it had before)
            nl.announce(ipr, pid, INNER, index, v6=net.version == 6)
        except VbdeclError as err:
            ctx.notes.append(f"could not announce {addr} on the bridge ({err.message}): other "
                             "environments there may reach it only once their neighbour entry fails")
        return {"address": addr, "prefixlen": net.prefixlen, "subnet": str(net), "ifname": INNER,
                "family": net.version, "netns": nl.netns_id(pid),
                "claim": claim.name(addr) if claim.index is not None else None}

    @_session
    def revert(self, ctx: Context, record: Record) -> None:
        self._release(ctx, record, keep_claim=False)

    def _release(self, ctx: Context, record: Record, *, keep_claim: bool) -> None:
        nl = _nl()
        if not keep_claim:
            # (first: a claim left without its lease would block the address for good;
            # at a teardown too, or it would stay until the kernel removes the veth)
            _Claim(_sess(ctx).host, ctx.instance).drop(record["address"])
        with shared.locked(ctx.state_dir) as st:
            leases = st["leases"].get(record["subnet"], {})
            if leases.get(record["address"]) == ctx.instance:
                del leases[record["address"]]
            if not leases:
                st["leases"].pop(record["subnet"], None)
        if _alive(ctx, record) and not ctx.extra.get("teardown"):
            pid = _env_pid(ctx, "net.address")
            ipr = _sess(ctx).env(pid)
            index = nl.index_of(ipr, record["ifname"])
            if index is not None:
                nl.address_delete(ipr, index, record["address"], record["prefixlen"])

    @_session
    def update(self, ctx: Context, params: Params, record: Record) -> Record:
        # the claim stays through the update (another state root could take the address
        # in between); apply takes off the old one if the address changed
        self._release(ctx, record, keep_claim=True)
        return self.apply(ctx, params)


# --- net.route ------------------------------------------------------------------

def _gateway(params: Params) -> str:
    if params.get("gateway"):
        return str(params["gateway"])
    subnet = params.get("subnet") or params.get("subnet6")
    if not subnet:
        raise VbdeclError("net.route needs a subnet or a gateway in its params")
    return str(ipam.gateway(ipam.parse_subnet(subnet)))


class Route:
    def describe(self, params: Params) -> str:
        return f"default route via {_gateway(params)} on {INNER}"

    @_session
    def probe(self, ctx: Context, params: Params, record: Record | None) -> Record | None:
        if record is None:
            # Recovery of an apply that died in this step: the default route on the
            # environment's own interface, in its namespace (while it lives).
            if ctx.env_pid is None or _nl().netns_id(ctx.env_pid) is None:
                return None
            record = {"gateway": _gateway(params), "ifname": INNER,
                      "netns": _nl().netns_id(ctx.env_pid)}
        if not _alive(ctx, record):
            return None
        nl = _nl()
        ipr = _sess(ctx).env(_env_pid(ctx, "net.route"))
        family = nl.AF_INET6 if ":" in record["gateway"] else nl.AF_INET
        if nl.default_route_interface(ipr, family) != record["ifname"]:
            return None
        return dict(record)

    @_session
    def apply(self, ctx: Context, params: Params) -> Record:
        nl = _nl()
        gw = _gateway(params)
        pid = _env_pid(ctx, "net.route")
        ipr = _sess(ctx).env(pid)
        index = _inner_index(ctx, ipr, pid)
        nl.default_route_add(ipr, gw, index, ifname=INNER)
        return {"gateway": gw, "ifname": INNER, "netns": nl.netns_id(pid)}

    @_session
    def revert(self, ctx: Context, record: Record) -> None:
        if not _alive(ctx, record) or ctx.extra.get("teardown"):
            return  # the route lives in the namespace, and goes with it
        nl = _nl()
        ipr = _sess(ctx).env(_env_pid(ctx, "net.route"))
        index = nl.index_of(ipr, record["ifname"])
        if index is not None:
            nl.default_route_delete(ipr, record["gateway"], index)

    @_session
    def update(self, ctx: Context, params: Params, record: Record) -> Record:
        self.revert(ctx, record)
        return self.apply(ctx, params)


# --- net.loopback ---------------------------------------------------------------

class Loopback:
    def describe(self, params: Params) -> str:
        return "loopback up inside"

    @_session
    def probe(self, ctx: Context, params: Params, record: Record | None) -> Record | None:
        # Without a record (recovery of an apply that died here) there is nothing to
        # undo: lo lives and dies with the environment's network namespace, which is
        # always new with the environment (a change of it replaces the environment).
        if record is None or not _alive(ctx, record):
            return None
        return dict(record)

    def apply(self, ctx: Context, params: Params) -> Record:
        nl = _nl()
        pid = _env_pid(ctx, "net.loopback")
        nl.loopback_up(pid)   # an ioctl: isolated environments never import pyroute2
        return {"netns": nl.netns_id(pid)}

    @_session
    def revert(self, ctx: Context, record: Record) -> None:
        # (lo goes with the environment's network namespace: only an environment that
        # stays has it taken down; a scale review saw every destroy import pyroute2)
        if not _alive(ctx, record) or ctx.extra.get("teardown") or not ctx.env_stays:
            return
        nl = _nl()
        nl.link_down(_sess(ctx).env(_env_pid(ctx, "net.loopback")), 1, "lo")

    @_session
    def update(self, ctx: Context, params: Params, record: Record) -> Record:
        return self.apply(ctx, params)

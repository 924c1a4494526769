"""Compile a normalized manifest document into a plan (docs/plan-format.md).

The plan is plain data. Action ids are stable addresses (``mount[/usr]``,
``cgroup.memory``, ``net.veth``); ``deps`` carry the ordering rules:

- ``env`` (namespaces, the environment's holder) first; ``rootfs`` next for
  everything inside the environment's mount namespace;
- filesystem entries keep the manifest order wherever their targets are
  related (one is an ancestor of, or equal to, the other): a child mount
  after its parent, and a later mount over an ancestor (or the same target)
  after the earlier ones it covers; unrelated targets are independent;
- an overlay after the entries that provide its lower directories (a lower
  that is, or lies under, the target of an earlier entry);
- ``net.dns`` after the entries that make ``/etc``;
- ``cgroup`` before its limits; bridge, veth, addresses, routes, NAT,
  published ports in that order; ``process`` last.

Teardown is the reverse of the order.
"""

from __future__ import annotations

import gc

from vbdecl import __version__
from vbdecl.errors import PlanError
from vbdecl.model.names import RLIM_INFINITY
from vbdecl.plan import fmt
from vbdecl.plan.graph import order
from vbdecl.plan.ids import fs_action_ids, numbered
from vbdecl.sys import oslite as os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    Action = dict[str, Any]
    Doc = dict[str, Any]


FORMAT = 1

LIMITS = ("memory", "memory_swap", "cpu", "cpu_weight", "pids", "io_weight")
NAMESPACES = ("user", "pid", "mount", "uts", "ipc", "net", "cgroup")


def canonical_json(value: Any) -> str:
    """The canonical JSON used for hashes and byte-for-byte comparisons."""
    import json  # here: vb's start-up does without it until a plan is compiled

    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def manifest_hash(doc: Doc) -> str:
    from vbdecl.hashing import sha256  # here: vb compiles without a hash

    body = {k: doc.get(k) for k in ("name", "labels", "annotations", "spec")}
    digest: str = sha256(canonical_json(body).encode()).hexdigest()
    return "sha256:" + digest


def compile_doc(doc: Doc, *, with_hash: bool = True) -> dict[str, Any]:
    """The PLAN of docs/plan-format.md for one normalized document. ``with_hash``
    False leaves ``manifest_hash`` None: vb runs a plan it never stores, and the
    canonical JSON of the hash would cost its start-up ~4 ms of imports."""
    spec: dict[str, Any] = doc["spec"]
    # compiling allocates many small objects and creates no reference
    # cycles: pausing the cycle collector keeps large plans linear
    collecting = gc.isenabled()
    gc.disable()
    try:
        actions = order(_Builder(spec).build())
    finally:
        if collecting:
            gc.enable()
    return {
        "format": FORMAT,
        "tool_version": __version__,
        "name": doc["name"],
        "labels": dict(doc.get("labels") or {}),
        "annotations": dict(doc.get("annotations") or {}),
        "manifest_hash": manifest_hash(doc) if with_hash else None,
        "source": doc.get("source"),
        "spec": spec,
        "actions": actions,
    }


def compile_file(path: str, *, data: bytes | None = None) -> list[dict[str, Any]]:
    """Load, validate and compile every environment of a manifest file
    (no cache; see :func:`vbdecl.engine.plancache.plans_for_file`); ``data``:
    as :func:`vbdecl.model.load_normalized`'s."""
    from vbdecl.model import load_normalized  # heavy: pydantic, ruamel

    return [compile_doc(doc) for doc in load_normalized(path, data=data)]


# --- helpers ----------------------------------------------------------------


def _is_new(ns: Any) -> bool:
    return ns is True


def _gateway(subnet: str | None) -> str | None:
    if not subnet:
        return None
    import ipaddress  # only for networking: vb's start-up does without it

    net = ipaddress.ip_network(subnet, strict=False)
    return str(net.network_address + 1)


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


class _Node:
    """A path component in the trie of filesystem targets."""

    __slots__ = ("children", "frontier", "last", "link")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.last = -1  # index of the latest entry whose target is exactly this path
        self.link: tuple[int, str] | None = None    # (index, points_to) of a symlink entry here
        # entries in this subtree that no later entry of the subtree depends on
        # (insertion order = index order)
        self.frontier: dict[int, None] = {}


class _FsOrder:
    """Dependencies between filesystem entries, in about O(n * depth).

    For related targets the manifest order is kept: each new entry depends
    on the latest earlier entry on an ancestor of (or the same as) its
    target, and on every earlier entry below its target that nothing later
    below it already depends on (the subtree's frontier).
    """

    def __init__(self) -> None:
        self.root = _Node()

    def chain(self, path: str) -> list[_Node]:
        node = self.root
        nodes = [node]
        for part in _parts(path):
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = _Node()
            node = child
            nodes.append(node)
        return nodes

    def latest_covering(self, path: str) -> int:
        """The latest entry whose target is an ancestor of, or equal to, ``path``."""
        node: _Node | None = self.root
        best = -1
        for part in [*_parts(path), None]:
            assert node is not None
            best = max(best, node.last)
            if part is None:
                break
            node = node.children.get(part)
            if node is None:
                break
        return best

    def needs(self, path: str) -> list[int]:
        """What an entry on ``path`` must come after (without adding it)."""
        nodes = self.chain(path)
        anc = max((n.last for n in nodes[:-1]), default=-1)
        after = [f for f in nodes[-1].frontier if f > anc]
        if after:
            return after
        return [anc] if anc >= 0 else []

    def through_links(self, path: str) -> tuple[str, set[int]]:
        """(where ``path``'s parent leads through the symlink entries added so far,
        the indexes of the links on the way), resolved as text: what the manifest
        declares, not what else is on disk. Links going round give up after 40."""
        parts = _parts(path)[:-1]
        via: set[int] = set()
        node: _Node | None = self.root
        i = hops = 0
        while node is not None and i < len(parts) and hops < 40:
            node = node.children.get(parts[i])
            if node is None or node.link is None:
                i += 1
                continue
            k, points_to = node.link
            via.add(k)
            hops += 1
            start = "" if points_to.startswith("/") else "/".join(parts[:i])
            parts = _parts(os.path.normpath("/".join(["", start, points_to, *parts[i + 1:]])))
            node, i = self.root, 0
        return "/" + "/".join(parts), via

    def add(self, j: int, path: str, *, points_to: str | None = None) -> tuple[list[int], bool]:
        """(what entry ``j`` on ``path`` comes after, whether a symlink entry made
        before it is on its way); ``points_to``: ``j`` is a symlink entry."""
        nodes = self.chain(path)
        anc, anc_depth, through = -1, -1, False
        for depth, n in enumerate(nodes[:-1]):
            if n.last > anc:
                anc, anc_depth = n.last, depth
            through = through or n.link is not None
        if points_to is not None:
            nodes[-1].link = (j, points_to)
        here = nodes[-1]
        below = list(here.frontier)
        after = [f for f in below if f > anc]
        deps = after if after else ([anc] if anc >= 0 else [])
        for depth, n in enumerate(nodes[:-1]):
            front = n.frontier
            if anc >= 0 and anc_depth <= depth:
                # the covering entry sits above this node: it already follows
                # every earlier entry of this subtree
                for k in list(front):
                    if k >= anc:
                        break
                    del front[k]
            elif anc >= 0:
                front.pop(anc, None)
            for k in below:
                front.pop(k, None)
            front[j] = None
        here.frontier = {j: None}
        here.last = j
        return deps, through


# --- describe lines ---------------------------------------------------------


def _describe_fs(e: dict[str, Any]) -> str:
    t, target = e["type"], e["target"]
    if t in ("bind", "ro-bind", "dev-bind"):
        src = e.get("source") if e.get("fd") is None else f"fd {e['fd']}"
        text = f"{t} {src} -> {target}"
        if t == "ro-bind":
            text += " (read-only)"
        if e.get("optional"):
            text += " (skipped if the source is missing)"
        return text
    if t == "proc":
        return f"proc on {target}"
    if t == "dev":
        return f"minimal /dev on {target}"
    if t == "mqueue":
        return f"mqueue on {target}"
    if t == "tmpfs":
        extra = []
        if e.get("size") is not None:
            extra.append(f"size {fmt.size(e['size'])}")
        if e.get("mode") is not None:
            extra.append(f"mode {fmt.mode(e['mode'])}")
        return f"tmpfs on {target}" + (f" ({', '.join(extra)})" if extra else "")
    if t == "dir":
        return f"directory {target}" + (f" (mode {fmt.mode(e['mode'])})" if e.get("mode") is not None else "")
    if t in ("file", "bind-data"):
        if e.get("fd") is not None:
            what = f"from fd {e['fd']}"
        elif e.get("content") is not None:
            what = f"{len(str(e['content']).encode())} bytes"
        else:
            what = f"copied from {e.get('source')}"
        extra = [what]
        if e.get("mode") is not None:
            extra.append(f"mode {fmt.mode(e['mode'])}")
        if t == "bind-data" and e.get("readonly"):
            extra.append("read-only")
        return f"{'file' if t == 'file' else 'bind-data'} {target} ({', '.join(extra)})"
    if t == "symlink":
        return f"symlink {target} -> {e['points_to']}"
    if t == "chmod":
        return f"chmod {fmt.mode(e['mode'])} {target}"
    if t == "remount-ro":
        return f"remount {target} read-only"
    lower = ":".join(e.get("lower") or [])
    if t == "overlay":
        return f"overlay on {target} (lower {lower}; upper {e.get('upper')}, work {e.get('work')})"
    if t == "tmp-overlay":
        return f"tmp-overlay on {target} (lower {lower}; writes discarded)"
    if t == "ro-overlay":
        return f"read-only overlay on {target} (lower {lower})"
    return f"{t} {target}"


def _describe_env(p: dict[str, Any]) -> str:
    new = [n for n in NAMESPACES if _is_new(p["namespaces"].get(n))]
    joined = [n + (" (a new pid namespace nested in it)" if p["namespaces"][n].get("nested") else "")
              for n in NAMESPACES if isinstance(p["namespaces"].get(n), dict)]
    parts = ["new namespaces: " + (" ".join(new) if new else "none")]
    if joined:
        parts.append("joins: " + " ".join(joined))
    if p.get("hostname"):
        parts.append(f"hostname {p['hostname']}")
    idmap = p.get("idmap")
    if idmap:
        maps = [f"{m['inside']}->{m['outside']} x{m['count']}" for m in idmap.get("uid") or []]
        parts.append("uid map " + ", ".join(maps))
    return "; ".join(parts)


def _describe_limit(name: str, value: Any) -> str:
    if name in ("memory", "memory_swap"):
        shown = fmt.size(value)
    else:
        shown = fmt.value(value)
    return f"{name.replace('_', ' ')} limit {shown}"


# --- the builder ------------------------------------------------------------


class _Builder:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.actions: list[Action] = []
        self.fs_tree = _FsOrder()

    def add(self, id_: str, kind: str, scope: str, deps: list[str], params: dict[str, Any],
            describe: str, replace: bool = False) -> Action:
        action: Action = {
            "id": id_, "kind": kind, "scope": scope, "deps": deps, "params": params,
            "describe": describe, "replace": replace,
        }
        self.actions.append(action)
        return action

    def build(self) -> list[Action]:
        spec = self.spec
        ns: dict[str, Any] = spec["namespaces"]
        env = {"namespaces": ns, "idmap": spec.get("idmap"), "hostname": spec.get("hostname")}
        self.add("env", "env.namespaces", "host", [], env, _describe_env(env), replace=True)
        filesystem: list[dict[str, Any]] = spec.get("filesystem") or []
        base = "env"
        if _is_new(ns.get("mount")):
            rootfs = spec.get("rootfs")
            self.add("rootfs", "fs.rootfs", "env", ["env"], {"rootfs": rootfs},
                     f"root from host directory {rootfs}" if rootfs else "fresh tmpfs root",
                     replace=True)
            base = "rootfs"
        elif filesystem or spec.get("rootfs"):
            raise PlanError(
                "filesystem entries need a new mount namespace, but namespaces.mount is "
                + ("a join" if isinstance(ns.get("mount"), dict) else "false"),
                where="env",
                hint="set namespaces.mount: true (or drop rootfs and filesystem)",
            )
        fs_ids = self.filesystem(filesystem, base)
        self.dns(base, fs_ids)
        self.cgroups()
        self.network()
        self.process()
        return self.actions

    def filesystem(self, entries: list[dict[str, Any]], base: str) -> list[str]:
        tree = self.fs_tree
        ids = fs_action_ids(entries)
        for j, (entry, id_) in enumerate(zip(entries, ids, strict=True)):
            target = entry["target"]
            points_to = str(entry["points_to"]) if entry["type"] == "symlink" else None
            deps_idx, through = tree.add(j, target, points_to=points_to)
            # an overlay also waits for the entries that provide its lower dirs
            more = {tree.latest_covering(lower) for lower in entry.get("lower") or []}
            if through:
                # placed through links declared before it: on those, and on what
                # covers the place they lead to
                leads, via = tree.through_links(target)
                more |= {*via, tree.latest_covering(leads)}
            more -= {-1, j, *deps_idx}
            deps = [ids[k] for k in sorted(deps_idx)] or [base]
            deps += [ids[k] for k in sorted(more)]
            self.add(id_, f"fs.{entry['type']}", "env", deps, entry, _describe_fs(entry))
        return ids

    def dns(self, base: str, fs_ids: list[str]) -> None:
        net = self.spec["network"]
        if base != "rootfs" or (self.spec.get("vb") or {}).get("net_files") is False:
            return
        if net.get("dns") == [] and not net.get("hosts"):
            return      # (no resolver, no hosts: no file to write or bind)
        tree = self.fs_tree
        idx: set[int] = set()
        for path in ("/etc/resolv.conf", "/etc/hosts"):
            idx.update(tree.needs(path))
        deps = [fs_ids[k] for k in sorted(idx)] or [base]
        dns, hosts = net.get("dns"), dict(net.get("hosts") or {})
        # what rootfs.make_net_files writes: dns left out is the host's resolv.conf, in
        # every mode (MANIFEST.md); an empty list, none
        what = []
        if dns:
            what.append(f"/etc/resolv.conf (nameservers {', '.join(dns)})")
        elif dns is None:
            what.append("/etc/resolv.conf (the host's, read-only)")
        if hosts:
            what.append(f"/etc/hosts (with {', '.join(hosts)})")
        self.add("net.dns", "fs.net-files", "env", deps,
                 {"dns": dns, "hosts": hosts, "hostname": self.spec.get("hostname")},
                 " and ".join(what))

    def cgroups(self) -> None:
        limits: dict[str, Any] = self.spec.get("limits") or {}
        present = [name for name in LIMITS if limits.get(name) is not None]
        if not present:
            return
        optional = bool(limits.get("optional"))
        self.add("cgroup", "cgroup.group", "host", ["env"],
                 {"layout_hint": None, "optional": optional}, "cgroup of the environment")
        for name in present:
            self.add(f"cgroup.{name}", "cgroup.limit", "host", ["cgroup"],
                     {"limit": name, "value": limits[name], "optional": optional},
                     _describe_limit(name, limits[name]))

    def network(self) -> None:
        spec = self.spec
        net: dict[str, Any] = spec["network"]
        mode = net.get("mode", "isolated")
        new_net = _is_new(spec["namespaces"].get("net"))
        if new_net:
            self.add("net.loopback", "net.loopback", "host", ["env"], {}, "bring up lo inside")
        ports: list[dict[str, Any]] = net.get("ports") or []
        if mode != "bridge":
            if ports:
                raise PlanError(
                    f"network.ports need network.mode bridge (mode is {mode})",
                    where="nat.port", hint="set network.mode: bridge, or remove the ports")
            return
        if not new_net:
            raise PlanError("network.mode bridge needs a new net namespace",
                            where="net.veth", hint="set namespaces.net: true")
        bridge = net.get("bridge") or "vbdecl0"
        subnet, subnet6 = net.get("subnet"), net.get("subnet6")
        gw, gw6 = _gateway(subnet), _gateway(subnet6)
        bid = f"net.bridge[{bridge}]"
        self.add(bid, "net.bridge", "host", ["env"],
                 {"bridge": bridge, "subnet": subnet, "subnet6": subnet6, "mtu": net.get("mtu"),
                  "gateway": gw, "gateway6": gw6},
                 f"bridge {bridge} ({', '.join(s for s in (subnet, subnet6) if s)}; gateway "
                 f"{', '.join(g for g in (gw, gw6) if g)}; created if missing)")
        self.add("net.veth", "net.veth", "host", [bid, "env"],
                 {"bridge": bridge, "mtu": net.get("mtu")}, f"veth pair, host end on {bridge}")
        addrs = ["net.address"]
        self.add("net.address", "net.address", "host", ["net.veth"],
                 {"subnet": subnet, "address": net.get("address", "auto"), "family": 4},
                 f"address {net.get('address', 'auto')} in {subnet}")
        if subnet6:
            addrs.append("net.address6")
            self.add("net.address6", "net.address", "host", ["net.veth"],
                     {"subnet": subnet6, "address": net.get("address6") or "auto", "family": 6},
                     f"address {net.get('address6') or 'auto'} in {subnet6}")
        self.add("net.guard", "net.guard", "host", list(addrs), {"bridge": bridge},
                 f"only its own MAC and addresses from its veth onto {bridge}")
        self.add("net.route", "net.route", "host", ["net.address"],
                 {"subnet": subnet, "gateway": gw, "family": 4}, f"default route via {gw}")
        if subnet6:
            self.add("net.route6", "net.route", "host", ["net.address6"],
                     {"subnet": subnet6, "gateway": gw6, "family": 6}, f"default route via {gw6}")
        egress = net.get("egress", "auto")
        if net.get("nat"):
            self.add("nat.masquerade", "nat.masquerade", "host", list(addrs),
                     {"subnet": subnet, "subnet6": subnet6, "egress": egress},
                     f"masquerade {', '.join(s for s in (subnet, subnet6) if s)} out of "
                     + ("the default route's interface" if egress == "auto" else egress))
        wheres = [f"{p['host_ip']}:" if p.get("host_ip") else "" for p in ports]
        port_ids = numbered(f"nat.port[{w}{p['host']}/{p['protocol']}]" for w, p in zip(wheres, ports, strict=True))
        for port, where, id_ in zip(ports, wheres, port_ids, strict=True):
            self.add(id_, "nat.port", "host", list(addrs), dict(port),
                     f"publish {where}{port['host']}/{port['protocol']} -> container port {port['container']}")

    def process(self) -> None:
        spec = self.spec
        proc: dict[str, Any] = spec["process"]
        needed = set()
        for action in self.actions:
            needed.update(action["deps"])
        deps = [a["id"] for a in self.actions if a["id"] not in needed]
        limits = spec.get("limits") or {}
        who = f"{proc.get('user', 0)}:{proc.get('group', 0)}"
        how = " under vbdecl's init" if proc.get("init", True) else ""
        rlimits = dict(limits.get("rlimits") or {})
        with_rl = "; rlimits " + ", ".join(f"{k}={fmt.rlimit(v, RLIM_INFINITY)}"
                                           for k, v in sorted(rlimits.items())) if rlimits else ""
        self.add("process", "proc.main", "host", deps,
                 {"process": proc, "security": spec["security"],
                  "rlimits": rlimits, "status": spec.get("status")},
                 f"run {fmt.command(proc.get('command'))} as {who}{how}{with_rl}")

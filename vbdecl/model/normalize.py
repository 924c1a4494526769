"""Model -> the normalized spec of docs/plan-format.md (plain data, every key present)."""

from __future__ import annotations

import os
import posixpath
from typing import Any

from vbdecl.model import manifest as m

DEFAULT_BRIDGE = "vbdecl0"
DEFAULT_SUBNET = "10.88.0.0/24"


def _host(path: str, base_dir: str) -> str:
    if path.startswith("/"):
        return posixpath.normpath(path).replace("//", "/")
    return posixpath.normpath(posixpath.join(base_dir, path))


def _ns(value: bool | m.NamespaceJoin, base_dir: str) -> bool | dict[str, Any]:
    if isinstance(value, m.NamespaceJoin):
        out: dict[str, Any] = {"join": _host(value.join, base_dir)}
        if value.nested:
            out["nested"] = True    # only when set: plans of plain joins stay as they were
        return out
    return value


def _fs(entry: Any, base_dir: str) -> dict[str, Any]:
    t = entry.type
    out: dict[str, Any] = {"type": t, "target": entry.target}
    if t in ("bind", "ro-bind", "dev-bind"):
        out["source"] = _host(entry.source, base_dir)
        out["optional"] = entry.optional
    elif t == "tmpfs":
        out["size"] = entry.size
        out["mode"] = entry.mode
    elif t == "dir":
        out["mode"] = entry.mode
    elif t == "file":
        out["content"] = entry.content
        out["source"] = _host(entry.source, base_dir) if entry.source is not None else None
        out["mode"] = entry.mode
    elif t == "bind-data":
        out["content"] = entry.content
        out["readonly"] = entry.readonly
        out["mode"] = entry.mode
    elif t == "symlink":
        out["points_to"] = entry.points_to
    elif t == "chmod":
        out["mode"] = entry.mode
    elif t == "overlay":
        out["lower"] = [_host(p, base_dir) for p in entry.lower]
        out["upper"] = _host(entry.upper, base_dir)
        out["work"] = _host(entry.work, base_dir)
    elif t in ("tmp-overlay", "ro-overlay"):
        out["lower"] = [_host(p, base_dir) for p in entry.lower]
    if t in ("overlay", "tmp-overlay", "ro-overlay") and entry.userxattr:
        out["userxattr"] = True     # (only when set: plans from before it stay the same)
    return out


def _seccomp(value: Any, base_dir: str) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, m.SeccompProfile):
        return {"profile": _host(value.profile, base_dir)}
    if isinstance(value, m.SeccompAllow):
        return {"allow": list(value.allow)}
    assert isinstance(value, m.SeccompDeny)
    return {"deny": list(value.deny), "errno": value.errno}


def normalize_spec(spec: m.Spec, base_dir: str) -> dict[str, Any]:
    base_dir = os.path.abspath(base_dir)
    ns = spec.namespaces
    net_mode = spec.network.mode
    namespaces: dict[str, Any] = {name: _ns(getattr(ns, name), base_dir) for name in
                                  ("user", "pid", "mount", "uts", "ipc", "net", "cgroup")}
    if (spec.rootfs is not None or spec.filesystem) and namespaces["mount"] is False:
        namespaces["mount"] = True
    if spec.hostname is not None and namespaces["uts"] is False:
        namespaces["uts"] = True
    if net_mode == "host":
        namespaces["net"] = False

    net = spec.network
    bridge = net_mode == "bridge"
    network: dict[str, Any] = {
        "mode": net_mode,
        "bridge": (net.bridge or DEFAULT_BRIDGE) if bridge else None,
        "subnet": (net.subnet or DEFAULT_SUBNET) if bridge else None,
        "subnet6": net.subnet6 if bridge else None,
        "address": net.address if bridge else "auto",
        "address6": (net.address6 or ("auto" if net.subnet6 else None)) if bridge else None,
        "nat": net.nat,
        "egress": net.egress,
        "ports": [{"host": p.host, "container": p.container, "protocol": p.protocol, "host_ip": p.host_ip}
                  for p in net.ports],
        "dns": list(net.dns) if net.dns is not None else None,
        "hosts": dict(net.hosts),
        "mtu": net.mtu,
    }
    lim = spec.limits
    proc = spec.process
    sec = spec.security
    ll = sec.landlock
    return {
        "rootfs": _host(spec.rootfs, base_dir) if spec.rootfs is not None else None,
        "hostname": spec.hostname,
        "namespaces": namespaces,
        "idmap": None if spec.idmap is None else {
            "uid": [{"inside": e.inside, "outside": e.outside, "count": e.count} for e in spec.idmap.uid],
            "gid": [{"inside": e.inside, "outside": e.outside, "count": e.count} for e in spec.idmap.gid],
        },
        "filesystem": [_fs(e, base_dir) for e in spec.filesystem],
        "limits": {
            "memory": lim.memory, "memory_swap": lim.memory_swap, "cpu": lim.cpu,
            "cpu_weight": lim.cpu_weight, "pids": lim.pids, "io_weight": lim.io_weight,
            "rlimits": {k: list(v) for k, v in lim.rlimits.items()},
            "optional": lim.optional,
        },
        "network": network,
        "process": {
            "command": list(proc.command) if proc.command is not None else None,
            "cwd": proc.cwd, "env": dict(proc.env), "clear_env": proc.clear_env,
            "unset_env": list(proc.unset_env), "argv0": proc.argv0, "user": proc.user,
            "group": proc.group, "init": proc.init, "die_with_parent": proc.die_with_parent,
            "new_session": proc.new_session, "inherit_fds": list(proc.inherit_fds), "tty": proc.tty,
        },
        "security": {
            "no_new_privs": sec.no_new_privs,
            "capabilities": None if sec.capabilities is None else {
                "drop": list(sec.capabilities.drop), "add": list(sec.capabilities.add)},
            "seccomp": _seccomp(sec.seccomp, base_dir),
            "landlock": None if ll is None else {
                "read": list(ll.read), "write": list(ll.write), "read_write": list(ll.read_write),
                "execute": list(ll.execute),
                "ports": {"bind": list(ll.ports.bind) if ll.ports else [],
                          "connect": list(ll.ports.connect) if ll.ports else []},
                "optional": ll.optional,
            },
            "disable_userns": sec.disable_userns,
        },
        "status": {
            "lock_file": _host(spec.status.lock_file, base_dir) if spec.status.lock_file else None,
            "events": _host(spec.status.events, base_dir) if spec.status.events else None,
        },
    }


def normalize(env: m.Environment, *, base_dir: str, source: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"name", "labels", "annotations", "source", "spec"}`` as docs/plan-format.md says."""
    return {
        "name": env.metadata.name,
        "labels": dict(env.metadata.labels),
        "annotations": dict(env.metadata.annotations),
        "source": source,
        "spec": normalize_spec(env.spec, base_dir),
    }

"""Hand-built normalized documents (docs/plan-format.md) for planner tests.

The planner is tested without the model: these builders give the exact
shape ``vbdecl.model.load_normalized`` produces, with every default filled.
"""

from __future__ import annotations

import copy
from typing import Any

DEFAULT_SPEC: dict[str, Any] = {
    "rootfs": None,
    "hostname": None,
    "namespaces": {"user": False, "pid": True, "mount": True, "uts": True, "ipc": True,
                   "net": True, "cgroup": False},
    "idmap": None,
    "filesystem": [],
    "limits": {"memory": None, "memory_swap": None, "cpu": None, "cpu_weight": None,
               "pids": None, "io_weight": None, "rlimits": {}, "optional": False},
    "network": {"mode": "isolated", "bridge": "vbdecl0", "subnet": None, "subnet6": None,
                "address": "auto", "address6": None, "nat": False, "egress": "auto",
                "ports": [], "dns": None, "hosts": {}, "mtu": None},
    "process": {"command": None, "cwd": "/", "env": {}, "clear_env": False, "unset_env": [],
                "argv0": None, "user": 0, "group": 0, "init": True, "die_with_parent": True,
                "new_session": False, "inherit_fds": [], "tty": "auto"},
    "security": {"no_new_privs": True, "capabilities": None, "seccomp": "default",
                 "landlock": None, "disable_userns": False},
    "status": {"lock_file": None, "events": None},
}

FS_DEFAULTS: dict[str, dict[str, Any]] = {
    "bind": {"source": "/", "optional": False},
    "ro-bind": {"source": "/", "optional": False},
    "dev-bind": {"source": "/dev", "optional": False},
    "proc": {}, "dev": {}, "mqueue": {},
    "tmpfs": {"size": None, "mode": None},
    "dir": {"mode": None},
    "file": {"content": "", "source": None, "mode": None},
    "bind-data": {"content": "", "readonly": False, "mode": None},
    "symlink": {"points_to": "/"},
    "chmod": {"mode": 0o755},
    "remount-ro": {},
    "overlay": {"lower": ["/"], "upper": "/var/tmp/up", "work": "/var/tmp/work"},
    "tmp-overlay": {"lower": ["/"]},
    "ro-overlay": {"lower": ["/"]},
}


def fs(type_: str, target: str, **keys: Any) -> dict[str, Any]:
    entry = {"type": type_, "target": target, **copy.deepcopy(FS_DEFAULTS[type_])}
    entry.update(keys)
    return entry


def _merge(base: dict[str, Any], over: dict[str, Any]) -> None:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key not in ("hosts", "env", "rlimits"):
            _merge(base[key], value)
        else:
            base[key] = value


def spec(**over: Any) -> dict[str, Any]:
    out = copy.deepcopy(DEFAULT_SPEC)
    _merge(out, copy.deepcopy(over))
    net = out["network"]
    if net["mode"] == "bridge" and net["subnet"] is None:
        net["subnet"] = "10.88.0.0/24"
    if net["mode"] == "host":
        out["namespaces"]["net"] = False
    return out


def doc(name: str = "web", **over: Any) -> dict[str, Any]:
    return {"name": name, "labels": {}, "annotations": {}, "source": None, "spec": spec(**over)}

"""Run a hand-built normalized spec (docs/plan-format.md), no manifest, no pydantic.

Shows the options of the process: command, env, user, exit status; the
output comes back through an inherited pipe.

    sudo .venv/bin/python examples/api/run_spec.py
"""

import os

import vbdecl

r, w = os.pipe()
spec = {
    "rootfs": None, "hostname": "example",
    "namespaces": {"user": False, "pid": True, "mount": True, "uts": True, "ipc": True,
                   "net": True, "cgroup": False},
    "idmap": None,
    "filesystem": [
        {"type": "ro-bind", "source": "/usr", "target": "/usr", "optional": False},
        {"type": "symlink", "target": "/bin", "points_to": "usr/bin"},
        {"type": "symlink", "target": "/lib", "points_to": "usr/lib"},
        {"type": "symlink", "target": "/lib64", "points_to": "usr/lib64"},
        {"type": "proc", "target": "/proc"},
        {"type": "dev", "target": "/dev"},
    ],
    "limits": {"rlimits": {"nofile": [256, 256]}},
    "network": {"mode": "isolated"},
    "process": {"command": ["/bin/bash", "-c", f"echo $(hostname) $(id -u) $$ $GREETING >&{w}; exit 3"],
                "cwd": "/", "env": {"GREETING": "hi"}, "clear_env": True, "unset_env": [],
                "argv0": None, "user": 1000, "group": 1000, "init": True, "die_with_parent": True,
                "new_session": True, "inherit_fds": [w], "tty": "auto"},
    "security": {"no_new_privs": True, "capabilities": None, "seccomp": "default",
                 "landlock": None, "disable_userns": False},
    "status": {"lock_file": None, "events": None},
}
result = vbdecl.run(spec)
os.close(w)
print("sandbox said:", os.read(r, 1024).decode().strip())
print("exit code:", result.code, "error:", result.error)

"""``vbdecl run`` / ``vbdecl exec`` against bubblewrap, unshare and bare Python, in one run.

    .venv/bin/python benchmarks/bench_run.py [-n ROUNDS] [--json]

Paired rounds (each round runs every contender once, in a shuffled order),
then medians and ratios:

- ``vbdecl run`` of a minimal manifest (pid + mount namespaces, /usr
  read-only with /bin /lib /lib64 symlinks, proc, dev, tmpfs /tmp) running
  /bin/true, with the plan cached; once with the default security
  (capabilities, no_new_privs, seccomp) and once with ``seccomp: off``;
- ``bwrap`` with the equivalent flags (bubblewrap applies no seccomp filter): the
  same sandbox, so with a tmpfs on /dev/shm and the host's /etc/resolv.conf
  bound read-only, as the manifest's ``dev`` and host network give; and, for
  comparison, with the 15 base flags that leave those two out;
- ``unshare -mpf --mount-proc /bin/true``;
- ``vbdecl exec`` of /bin/true into a live environment vs
  ``python -c pass`` with the same interpreter.

Also: peak RSS of each contender (max of 3 runs under GNU time), and the
modules a cached run imports (none of pydantic, ruamel, rich, pyroute2,
typer, click may appear). Targets (issue 5): run <= 5x bwrap, exec <= 2.5x
python -c pass, peak RSS < 15 MiB. Needs root (live environments, bwrap
without setuid). Leaves nothing behind: temporary state, cache and
manifests are removed, the live environment is destroyed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
VBDECL = os.path.join(VENV_BIN, "vbdecl")
PYTHON = sys.executable

MANIFEST = """\
apiVersion: vbdecl/v1
kind: Environment
metadata:
  name: {name}
spec:
  namespaces: {{user: false, pid: true, mount: true, uts: false, ipc: false, net: false, cgroup: false}}
  network: {{mode: host}}
  filesystem:
    - {{type: ro-bind, source: /usr, target: /usr}}
    - {{type: symlink, target: /bin, points_to: usr/bin}}
    - {{type: symlink, target: /lib, points_to: usr/lib}}
    - {{type: symlink, target: /lib64, points_to: usr/lib64}}
    - {{type: proc, target: /proc}}
    - {{type: dev, target: /dev}}
    - {{type: tmpfs, target: /tmp}}
  process:
    command: [/bin/true]
  security:
    seccomp: {seccomp}
"""

BWRAP_BASE = ["bwrap", "--unshare-pid", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin",
              "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--proc", "/proc",
              "--dev", "/dev", "--tmpfs", "/tmp", "/bin/true"]
# The same sandbox as the manifest's: vbdecl's dev has a tmpfs on /dev/shm (bwrap's a
# plain directory), and a host-network environment gets the host's /etc/resolv.conf,
# read-only (network.dns omitted, docs/manifest.md).
BWRAP = [*BWRAP_BASE[:-1], "--tmpfs", "/dev/shm",
         *(["--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf"] if os.path.exists("/etc/resolv.conf") else []),
         "/bin/true"]
UNSHARE = ["unshare", "-mpf", "--mount-proc", "/bin/true"]

HEAVY = ("pydantic", "ruamel", "rich", "pyroute2", "typer", "click")


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """(wall seconds, exit status) of one run."""
    t0 = time.perf_counter()
    pid = os.posix_spawn(argv[0] if os.path.isabs(argv[0]) else shutil.which(argv[0]) or argv[0],
                         argv, env, file_actions=[(os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0)])
    _, status = os.waitpid(pid, 0)
    return time.perf_counter() - t0, os.waitstatus_to_exitcode(status)


def peak_rss(argv: list[str], env: dict[str, str]) -> int:
    """Peak RSS (KiB) of the command and its children, through GNU time: a child forked
    from this (large) Python process would report our RSS as its own high-water mark."""
    if not os.path.exists("/usr/bin/time"):
        return 0
    out = subprocess.run(["/usr/bin/time", "-f", "%M", *argv], env=env, capture_output=True, text=True)
    try:
        return int(out.stderr.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return 0


def start_live(tmp: str, env: dict[str, str]) -> tuple[str, dict[str, object]]:
    """A live environment for exec, made through the runtime's own ops (no engine needed)."""
    sys.path.insert(0, ROOT)
    from vbdecl.ops import op_for
    from vbdecl.ops.base import Context

    state = os.path.join(tmp, "state")
    spec = {
        "rootfs": None, "hostname": None,
        "namespaces": {"user": False, "pid": True, "mount": True, "uts": False, "ipc": False,
                       "net": False, "cgroup": False},
        "idmap": None, "filesystem": [], "limits": {"rlimits": {}}, "network": {"mode": "host"},
        "process": {"command": ["/bin/sleep", "3600"], "cwd": "/", "env": {}, "clear_env": False,
                    "unset_env": [], "argv0": None, "user": 0, "group": 0, "init": True,
                    "die_with_parent": False, "new_session": False, "inherit_fds": [], "tty": "auto"},
        "security": {"no_new_privs": True, "capabilities": None, "seccomp": "off", "landlock": None,
                     "disable_userns": False},
        "status": {"lock_file": None, "events": None},
    }
    name = "bench-exec"
    env_dir = os.path.join(state, "envs", name)
    os.makedirs(env_dir)
    ctx = Context(name=name, instance="vb-" + os.urandom(4).hex(), state_dir=env_dir,
                  runtime_dir=os.path.join(state, "run", "bench"), spec=spec)
    record = op_for("env.namespaces").apply(ctx, {"namespaces": spec["namespaces"], "idmap": None,
                                                  "hostname": None})
    with open(os.path.join(env_dir, "state.json"), "w") as f:
        json.dump({"format": 1, "name": name, "instance": ctx.instance, "serial": 1, "plan": {"spec": spec},
                   "resources": {"env": {"kind": "env.namespaces", "record": record}}}, f)
    return state, record


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--rounds", type=int, default=30)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_run.py needs root", file=sys.stderr)
        return 1
    tmp = tempfile.mkdtemp(prefix="bench-run-", dir="/var/tmp")
    env = dict(os.environ, VBDECL_CACHE_DIR=os.path.join(tmp, "cache"),
               PYTHONPYCACHEPREFIX=os.path.join(tmp, "pycache"))
    # Installed Python code runs from .pyc files; measure that, not compiling on each start.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    record: dict[str, object] | None = None
    try:
        contenders: dict[str, list[str]] = {}
        for label, seccomp in (("vbdecl run", "default"), ("vbdecl run (seccomp off)", "off")):
            path = os.path.join(tmp, f"{seccomp}.yaml")
            with open(path, "w") as f:
                f.write(MANIFEST.format(name=f"bench-{seccomp}", seccomp=seccomp))
            warm = subprocess.run([VBDECL, "run", path], env=env, capture_output=True, text=True)
            if warm.returncode != 0:
                print(f"{label}: failed: {warm.stderr.strip()}", file=sys.stderr)
                return 1
            contenders[label] = [VBDECL, "run", path]
        if shutil.which("bwrap"):
            contenders["bwrap"] = BWRAP
            contenders["bwrap (base flags)"] = BWRAP_BASE
        if shutil.which("unshare"):
            contenders["unshare -mpf"] = UNSHARE
        state, record = start_live(tmp, env)
        contenders["vbdecl exec"] = [VBDECL, "--state-dir", state, "exec", "bench-exec", "--", "/bin/true"]
        contenders["python -c pass"] = [PYTHON, "-c", "pass"]

        times: dict[str, list[float]] = {k: [] for k in contenders}
        rss = {k: max(peak_rss(v, env) for _ in range(3)) for k, v in contenders.items()}
        for _ in range(args.rounds):
            order = list(contenders)
            random.shuffle(order)
            for label in order:
                wall, code = timed(contenders[label], env)
                if code != 0:
                    print(f"{label}: exit {code}", file=sys.stderr)
                    return 1
                times[label].append(wall)

        med = {k: statistics.median(v) * 1000 for k, v in times.items()}
        ratios = {}
        if "bwrap" in med:
            ratios["vbdecl run / bwrap"] = med["vbdecl run"] / med["bwrap"]
            ratios["vbdecl run (seccomp off) / bwrap"] = med["vbdecl run (seccomp off)"] / med["bwrap"]
            ratios["vbdecl run / bwrap (base flags)"] = med["vbdecl run"] / med["bwrap (base flags)"]
        if "unshare -mpf" in med:
            ratios["vbdecl run / unshare -mpf"] = med["vbdecl run"] / med["unshare -mpf"]
        ratios["vbdecl exec / python -c pass"] = med["vbdecl exec"] / med["python -c pass"]

        probe = subprocess.run(
            [PYTHON, "-c", "import sys, json; from vbdecl.cli.fast import main; rc = main(sys.argv[1:]); "
                           "print(json.dumps(sorted(sys.modules)), file=sys.stderr); sys.exit(rc)",
             "run", contenders["vbdecl run"][2]],
            env=env, capture_output=True, text=True, cwd=ROOT)
        mods = json.loads(probe.stderr.strip().splitlines()[-1])
        heavy = sorted(m for m in mods if m.split(".")[0] in HEAVY)

        report = {"rounds": args.rounds, "median_ms": med, "ratios": ratios,
                  "peak_rss_kib": rss, "heavy_modules_on_cached_run": heavy,
                  "targets": {"vbdecl run / bwrap": 5.0, "vbdecl exec / python -c pass": 2.5,
                              "peak_rss_mib": 15}}
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(f"{args.rounds} paired rounds; medians:")
            for k, v in med.items():
                print(f"  {k:28s} {v:8.1f} ms   peak RSS {rss[k] / 1024:5.1f} MiB")
            print("ratios:")
            for k, v in ratios.items():
                print(f"  {k:36s} {v:6.2f}x")
            print(f"heavy modules imported by a cached run: {heavy or 'none'}")
        return 0
    finally:
        if record is not None:
            from vbdecl.runtime.live import stop_env

            stop_env(record)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

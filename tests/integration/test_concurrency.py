"""Concurrency through the real CLI, with one shared state root (as on a host).

- N environments with bridge networking (all on one bridge, with NAT and a
  published port each) applied in parallel, then destroyed in parallel, for
  several rounds: every apply succeeds, addresses, veths and ports never
  collide, the bridge has exactly N ports, and after each round nothing is
  left. N=20 and 3 rounds with VBDECL_FULL=1; N=8 and 2 rounds otherwise (CI).
- Applies of one environment racing each other: one wins; every loser fails
  at once with a clear "locked by pid ..." error (or finds nothing to do); the
  state is one consistent revision.
- ``run`` racing ``destroy`` and ``exec`` racing ``destroy``: no crash, every
  loser gets a clear error, nothing left.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from test_reliability_support import (
    FULL,
    REPO,
    assert_clean,
    check,
    cleanup_envs,  # noqa: F401  (autouse fixture)
    cli,
    host,
    rand_subnet,
    track,
    uniq,
)
from testmanifests import head

N_ENVS = int(os.environ.get("VBDECL_CONCURRENCY_ENVS", "20" if FULL else "8"))
ROUNDS = 3 if FULL else 2

BRIDGED = head('{name}', hostname='{name}') + """\
    - {{type: proc, target: /proc}}
    - {{type: tmpfs, target: /tmp}}
  limits:
    pids: 16
  network:
    mode: bridge
    bridge: {bridge}
    subnet: {subnet}
    nat: true
    ports: ["{port}:80/tcp"]
  process:
    command: {command}
"""


def _manifest(d: Path, name: str, bridge: str, subnet: str, port: int,
              command: list[str] | None = None) -> Path:
    p = d / f"{name}.yaml"
    p.write_text(BRIDGED.format(name=name, bridge=bridge, subnet=subnet, port=port,
                                command=json.dumps(command or ["/bin/sleep", "3600"])))
    return p


def _state(sd: Path, name: str) -> dict | None:  # type: ignore[type-arg]
    p = sd / "envs" / name / "state.json"
    return json.loads(p.read_text()) if p.exists() else None


def test_parallel_bridged_environments(tmp_path: Path) -> None:
    sd = tmp_path / "state"
    bridge = f"vbc{uniq()}"
    subnet = rand_subnet()
    base_port = random.randint(20000, 50000)
    names = [f"c{i:02d}" for i in range(N_ENVS)]
    files = [_manifest(tmp_path, n, bridge, subnet, base_port + i) for i, n in enumerate(names)]
    for n in names:
        track(sd, n)
    before = host()
    timings = []
    with ThreadPoolExecutor(max_workers=N_ENVS) as pool:
        for rnd in range(ROUNDS):
            t0 = time.monotonic()
            outs = list(pool.map(lambda f: cli(sd, "apply", str(f), "-y", timeout=300), files))
            for n, out in zip(names, outs, strict=True):
                check(out, 0, f"round {rnd}: parallel apply of {n}")
            t1 = time.monotonic()
            states = [_state(sd, n) for n in names]
            assert all(states)
            addrs = [s["resources"]["net.address"]["record"] for s in states]  # type: ignore[index]
            flat = [json.dumps(a, sort_keys=True) for a in addrs]
            assert len(set(flat)) == N_ENVS, f"address records collide: {flat}"
            instances = {s["instance"] for s in states}  # type: ignore[index]
            assert len(instances) == N_ENVS
            # what the kernel shows: one bridge with one port per environment, one veth each
            ports = set(os.listdir(f"/sys/class/net/{bridge}/brif"))
            assert ports == {i.replace("-", "") + "h" for i in instances}, ports
            inet = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", bridge],
                                  capture_output=True, text=True).stdout
            assert subnet.replace(".0/24", ".1/24") in inet
            rules = subprocess.run(["nft", "list", "table", "inet", "vbdecl"], capture_output=True,
                                   text=True).stdout
            for i in range(N_ENVS):
                assert f"tcp . {base_port + i} " in rules
            outs = list(pool.map(lambda n: cli(sd, "destroy", n, "-y", timeout=300), names))
            for n, out in zip(names, outs, strict=True):
                check(out, 0, f"round {rnd}: parallel destroy of {n}")
            timings.append((t1 - t0, time.monotonic() - t1))
            assert_clean(before, f"round {rnd}: after the parallel destroy")
    print(f"\n{N_ENVS} bridged environments: (apply s, destroy s) per round: "
          + ", ".join(f"({a:.1f}, {d:.1f})" for a, d in timings))


def test_applies_of_one_environment_race(tmp_path: Path) -> None:
    sd = tmp_path / "state"
    f = _manifest(tmp_path, "race", f"vbc{uniq()}", rand_subnet(), random.randint(20000, 50000))
    track(sd, "race")
    before = host()
    with ThreadPoolExecutor(max_workers=6) as pool:
        outs = list(pool.map(lambda _: cli(sd, "apply", str(f), "-y"), range(6)))
    winners = [o for o in outs if o.returncode == 0 and "applied revision" in o.stdout + o.stderr]
    losers = [o for o in outs if o not in winners]
    assert len(winners) >= 1, [o.stderr for o in outs]
    for o in losers:
        assert "Traceback" not in o.stderr
        if o.returncode != 0:
            assert o.returncode == 1 and "locked by pid" in o.stderr, o.stderr
            assert "hint:" in o.stderr
    state = _state(sd, "race")
    assert state is not None and state["revision"] == 1 and state["serial"] == 1
    revs = sorted(os.listdir(sd / "envs" / "race" / "revisions"))
    assert revs == ["1.json"], revs
    check(cli(sd, "destroy", "race", "-y"), 0, "destroy")
    assert_clean(before, "after the racing applies")


def _popen(sd: Path, *args: str) -> subprocess.Popen[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("VBDECL_") or k == "VBDECL_CACHE_DIR"}
    e["VBDECL_CACHE_DIR"] = str(sd.parent / "cache")
    return subprocess.Popen([sys.executable, "-m", "vbdecl", "--state-dir", str(sd), *args], env=e,
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_run_and_exec_race_destroy(tmp_path: Path) -> None:
    sd = tmp_path / "state"
    bridge, subnet = f"vbc{uniq()}", rand_subnet()
    port = random.randint(20000, 50000)
    f = _manifest(tmp_path, "racer", bridge, subnet, port)
    track(sd, "racer")
    # the same environment name and bridge without the published port, in another file
    quiet = tmp_path / "quiet"
    quiet.mkdir()
    g = _manifest(quiet, "racer", bridge, subnet, port)
    g.write_text(g.read_text().replace(f'    ports: ["{port}:80/tcp"]\n', ""))
    before = host()
    for rnd in range(3):
        check(cli(sd, "apply", str(f), "-y"), 0, "apply")
        # runs (ephemeral instances) and execs into the live one, started together with its destroy
        procs = [("run", _popen(sd, "run", str(f), "--", "/bin/sh", "-c", "echo ran")),
                 ("run-quiet", _popen(sd, "run", str(g), "--", "/bin/sh", "-c", "echo ran")),
                 ("run-quiet", _popen(sd, "run", str(g), "--", "/bin/sh", "-c", "echo ran")),
                 ("exec", _popen(sd, "exec", "racer", "--", "/bin/true")),
                 ("exec", _popen(sd, "exec", "racer", "--", "/bin/true"))]
        time.sleep(0.05 * rnd)
        procs.append(("destroy", _popen(sd, "destroy", "racer", "-y")))
        results = [(what, p, *p.communicate(timeout=120)) for what, p in procs]
        for what, p, out, err in results:
            assert "Traceback" not in err, (what, err)
            code = p.returncode
            if what == "destroy":
                assert code == 0, err
            elif what == "run-quiet":
                # its own instance: the destroy of the live one does not touch it
                assert code == 0 and out == "ran\n", (code, out, err)
            elif what == "run":
                # the live environment may still hold the published port: a clear conflict
                assert (code, out) == (0, "ran\n") or (
                    code == 125 and f"host port {port}/tcp is already published" in err), (code, out, err)
            else:
                assert code == 0 or (code == 125 and "error:" in err and "hint:" in err), (code, err)
        assert_clean(before, f"round {rnd}: run/exec racing destroy")

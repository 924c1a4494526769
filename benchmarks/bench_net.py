"""Per-environment network setup/teardown and NAT add/remove, vbdecl vs the `ip` recipe.

Runs as root inside a private network namespace of its own (nothing on the
host is touched). The bridge exists already (a first environment made it);
each round makes a fresh environment namespace, then:

- vbdecl: net.bridge (join), net.veth, net.loopback, net.address (auto),
  net.route through the ops, then their reverts;
- ip: the equivalent `ip link add ... netns`, `ip -n ... addr add`, route,
  lo up, then `ip link del`.

Also NAT add+remove (nat.masquerade + one nat.port, with the table existing:
the first environment keeps a masquerade) against the `nft` command doing
the same, and net.guard add+remove (the table existing: the first
environment keeps its guard) against `nft` adding and deleting the same
chain. Prints medians and ratios measured in this run.

    .venv/bin/python benchmarks/bench_net.py [ROUNDS]
"""

from __future__ import annotations

import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

CLONE_NEWNET = 0x40000000
libc = ctypes.CDLL(None, use_errno=True)


def netns_child() -> tuple[int, int]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        libc.unshare(CLONE_NEWNET)
        os.read(r, 1)
        os._exit(0)
    os.close(r)
    # wait until the child is in its own namespace
    me = os.stat("/proc/self/ns/net").st_ino
    while os.stat(f"/proc/{pid}/ns/net").st_ino == me:
        time.sleep(0.0005)
    return pid, w


def stop(pid: int, w: int) -> None:
    os.close(w)
    os.waitpid(pid, 0)
    # The kernel dismantles a dead namespace asynchronously, holding the rtnl
    # lock; let it finish so that the next round does not time that.
    time.sleep(SETTLE)


SETTLE = 0.05


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    if os.geteuid() != 0:
        sys.exit("bench_net needs root")
    if libc.unshare(CLONE_NEWNET) != 0:
        sys.exit("unshare(CLONE_NEWNET) failed")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1"], check=True)
    subprocess.run(["ip", "addr", "add", "192.168.250.1/24", "dev", "up0"], check=True)
    subprocess.run(["ip", "link", "set", "up0", "up"], check=True)
    subprocess.run(["ip", "route", "add", "default", "via", "192.168.250.254"], check=True)

    t0 = time.perf_counter()
    from vbdecl.ops import op_for
    from vbdecl.ops.base import Context
    from vbdecl.ops.net import release
    imports = time.perf_counter() - t0
    state = tempfile.mkdtemp(prefix="vbdecl-bench-")
    subnet = "10.123.0.0/16"
    acts = [("net.bridge[vbbench0]", "net.bridge", {"bridge": "vbbench0", "subnet": subnet, "subnet6": None, "mtu": None}),
            ("net.veth", "net.veth", {"bridge": "vbbench0", "mtu": None}),
            ("net.loopback", "net.loopback", {}),
            ("net.address", "net.address", {"subnet": subnet, "address": "auto"}),
            ("net.route", "net.route", {"subnet": subnet})]
    guard = ("net.guard", "net.guard", {"bridge": "vbbench0"})
    nat = [("nat.masquerade", "nat.masquerade", {"subnet": subnet, "egress": "auto"}),
           ("nat.port[8080/tcp]", "nat.port", {"host": 8080, "container": 80, "protocol": "tcp", "host_ip": None})]

    def ctx_for(i: int, pid: int) -> Context:
        inst = f"vb-{i:08x}"
        return Context(name=inst, instance=inst, state_dir=f"{state}/envs/{inst}", runtime_dir="/nonexistent",
                       env_pid=pid)

    # the first environment creates the bridge and pays the pyroute2 import
    pid, w = netns_child()
    keeper = ctx_for(0xFFFFFF, pid)
    t0 = time.perf_counter()
    for aid, kind, params in acts:
        keeper.records[aid] = op_for(kind).apply(keeper, params)
    first = time.perf_counter() - t0
    # the first NAT user creates the table and turns forwarding on
    t0 = time.perf_counter()
    keeper.records["nat.masquerade"] = op_for("nat.masquerade").apply(keeper, nat[0][2])
    first_nat = time.perf_counter() - t0
    keeper.records["net.guard"] = op_for("net.guard").apply(keeper, guard[2])

    setup, teardown, nat_add, nat_del, teardown_ns, guard_both = [], [], [], [], [], []
    per_op: dict[str, list[float]] = {aid: [] for aid, _, _ in [*acts, guard, *nat]}
    for i in range(rounds):
        cpid, cw = netns_child()
        ctx = ctx_for(i, cpid)
        t0 = time.perf_counter()
        for aid, kind, params in acts:
            ta = time.perf_counter()
            ctx.records[aid] = op_for(kind).apply(ctx, params)
            per_op[aid].append(time.perf_counter() - ta)
        t1 = time.perf_counter()
        for aid, kind, params in nat:
            ta = time.perf_counter()
            ctx.records[aid] = op_for(kind).apply(ctx, params)
            per_op[aid].append(time.perf_counter() - ta)
        t2 = time.perf_counter()
        for aid, kind, _ in reversed(nat):
            op_for(kind).revert(ctx, ctx.records.pop(aid))
        t3 = time.perf_counter()
        nat_del.append(t3 - t2)
        ctx.records["net.guard"] = op_for("net.guard").apply(ctx, guard[2])
        per_op["net.guard"].append(time.perf_counter() - t3)
        op_for("net.guard").revert(ctx, ctx.records.pop("net.guard"))
        guard_both.append(time.perf_counter() - t3)
        t3 = time.perf_counter()        # (the teardown's start)
        if i % 2:
            # teardown as destroy does it: the namespace goes with the environment
            ctx.extra["teardown"] = True
            for aid, kind, _ in reversed(acts):
                op_for(kind).revert(ctx, ctx.records.pop(aid))
            t4 = time.perf_counter()
            teardown_ns.append(t4 - t3)
        else:
            for aid, kind, _ in reversed(acts):
                op_for(kind).revert(ctx, ctx.records.pop(aid))
            t4 = time.perf_counter()
            teardown.append(t4 - t3)
        release(ctx)   # as the end of a command does: close its netlink/nftables sockets
        stop(cpid, cw)
        setup.append(t1 - t0)
        nat_add.append(t2 - t1)

    ip_setup, ip_teardown, nft_cmd, nft_guard = [], [], [], []
    ip = shutil.which("ip") or "ip"
    nft = shutil.which("nft") or "nft"
    for i in range(rounds):
        cpid, cw = netns_child()
        name = f"vbip{i}h"
        a = f"10.123.200.{i + 2}"
        t0 = time.perf_counter()
        subprocess.run([ip, "link", "add", name, "master", "vbbench0", "up", "type", "veth", "peer", "name", "eth0",
                        "netns", str(cpid)], check=True)
        n = ["nsenter", "-t", str(cpid), "-n", ip]
        subprocess.run([*n, "link", "set", "eth0", "up"], check=True)
        subprocess.run([*n, "link", "set", "lo", "up"], check=True)
        subprocess.run([*n, "addr", "add", f"{a}/16", "dev", "eth0"], check=True)
        subprocess.run([*n, "route", "add", "default", "via", "10.123.0.1"], check=True)
        t1 = time.perf_counter()
        subprocess.run([ip, "link", "del", name], check=True)
        t2 = time.perf_counter()
        subprocess.run([nft, f"add table ip vbbenchip; add chain ip vbbenchip post {{ type nat hook postrouting priority 100; }}; "
                        f"add rule ip vbbenchip post ip saddr {a} oifname up0 masquerade; "
                        f"add chain ip vbbenchip pre {{ type nat hook prerouting priority -100; }}; "
                        f"add rule ip vbbenchip pre tcp dport 8080 dnat to {a}:80"], check=True)
        subprocess.run([nft, "delete table ip vbbenchip"], check=True)
        t3 = time.perf_counter()
        chain = f"vbip{i}-guard"
        subprocess.run([nft, f"add chain bridge vbdecl {chain}; "
                        f"add rule bridge vbdecl {chain} ether type != {{ ip, arp, ip6 }} drop; "
                        f"add rule bridge vbdecl {chain} ether saddr != 02:00:00:00:00:01 drop; "
                        f"add rule bridge vbdecl {chain} arp saddr ether != 02:00:00:00:00:01 drop; "
                        f"add rule bridge vbdecl {chain} arp saddr ip != {{ {a}, 0.0.0.0 }} drop; "
                        f"add rule bridge vbdecl {chain} ip saddr != {a} drop; "
                        f"add rule bridge vbdecl {chain} ip6 saddr != {{ fe80::/10, :: }} drop; "
                        f"add rule bridge vbdecl {chain} icmpv6 type {{ nd-router-advert, nd-redirect }} drop; "
                        f"add rule bridge vbdecl {chain} icmpv6 type nd-neighbor-advert @th,64,16 != 0xfe80 drop; "
                        f"add element bridge vbdecl ports {{ {name} : jump {chain} }}"], check=True)
        subprocess.run([nft, f"delete element bridge vbdecl ports {{ {name} }}; flush chain bridge vbdecl {chain}; "
                        f"delete chain bridge vbdecl {chain}"], check=True)
        nft_guard.append(time.perf_counter() - t3)
        stop(cpid, cw)
        ip_setup.append(t1 - t0)
        ip_teardown.append(t2 - t1)
        nft_cmd.append(t3 - t2)

    for aid, kind, _ in [guard, nat[0], *reversed(acts)]:
        op_for(kind).revert(keeper, keeper.records.pop(aid))
    release(keeper)
    stop(pid, w)
    shutil.rmtree(state, ignore_errors=True)

    def ms(xs: list[float]) -> float:
        return statistics.median(xs) * 1000

    print(f"rounds: {rounds}; imports of vbdecl.ops: {imports * 1000:.1f} ms; "
          f"first environment (creates the bridge, imports pyroute2): {first * 1000:.1f} ms; "
          f"first NAT user (creates the table, loads libnftables): {first_nat * 1000:.1f} ms")
    print(f"{'':34}{'vbdecl':>10}{'ip/nft':>10}{'ratio':>8}")
    rows = [("setup per environment", ms(setup), ms(ip_setup)),
            ("teardown (delete veth)", ms(teardown), ms(ip_teardown)),
            ("teardown (namespace goes)", ms(teardown_ns), float("nan")),
            ("NAT add + remove", ms(nat_add) + ms(nat_del), ms(nft_cmd)),
            ("guard add + remove", ms(guard_both), ms(nft_guard))]
    for label, v, ref in rows:
        ratio = ref / v if ref == ref else float("nan")
        print(f"{label:34}{v:9.2f}ms{ref:9.2f}ms{ratio:7.1f}x")
    print(f"  NAT add {ms(nat_add):.2f} ms, remove {ms(nat_del):.2f} ms; targets: setup < 10, teardown < 5, NAT < 5 ms")
    print("  apply per action (median): " + ", ".join(f"{aid} {ms(v):.2f}" for aid, v in per_op.items()))
    print(f"  load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (other work inflates all figures)")


if __name__ == "__main__":
    main()

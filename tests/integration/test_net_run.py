"""End to end: `vbdecl run` of a bridge-mode manifest (the runtime's host actions)."""

from __future__ import annotations

import ipaddress
import json
import os
import random
import secrets
import subprocess
import sys
from pathlib import Path

from testmanifests import bridged

from vbdecl.net import shared

MANIFEST = bridged('nete2e', "    mtu: 1400\n") + """\
  process:
    command: ["/bin/sh", "-c", "ip -o -4 addr show dev eth0; ip -o link show dev eth0; ip route"]
"""


def test_vbdecl_run_bridge_mode(tmp_path: Path, state_dir: Path) -> None:
    bridge = f"vbt{secrets.token_hex(4)}"
    subnet = f"10.{random.randint(100, 250)}.{random.randrange(0, 250, 2)}.0/24"
    gw = subnet.replace(".0/24", ".1")
    path = tmp_path / "env.yaml"
    path.write_text(MANIFEST.format(bridge=bridge, subnet=subnet))
    before = set(os.listdir("/sys/class/net"))
    out = subprocess.run([sys.executable, "-m", "vbdecl", "run", "--state-dir", str(state_dir), str(path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # inside: eth0 with an address of the subnet, the MTU, a default route via the gateway
    addr_line = next(line for line in out.stdout.splitlines() if " inet " in line)
    addr = addr_line.split(" inet ")[1].split("/")[0]
    assert ipaddress.ip_address(addr) in ipaddress.ip_network(subnet) and addr != gw
    assert "mtu 1400" in out.stdout
    assert f"default via {gw} dev eth0" in out.stdout
    # after the run: the bridge (vbdecl made it) and the veth are gone, the shared state is empty
    assert set(os.listdir("/sys/class/net")) - before == set()
    st = shared.read(str(state_dir))
    assert st["bridges"] == {} and st["leases"] == {}


SERVICE = bridged('nete2enat', '    egress: {egress}\n    ports: ["{port}:8000/tcp"]\n', nat=True) + """\
  process:
    command: ["/usr/bin/python3", "-c", {code}]
"""

INSIDE = """
import socket
c = socket.create_connection(("{up_ip}", 7003), timeout=10)
c.sendall(b"out")
print("upstream said", c.recv(64).decode())
c.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8000))
s.listen()
s.settimeout(20)
c, p = s.accept()
c.sendall(c.recv(64))
print("peer", p[0])
"""


def test_vbdecl_run_nat_and_published_port(tmp_path: Path, state_dir: Path) -> None:
    from test_net import assert_nat_gone, echo_client, echo_server, in_netns, result, upstream

    bridge = f"vbt{secrets.token_hex(4)}"
    a, b = random.randint(100, 250), random.randrange(0, 250, 2)
    subnet = f"10.{a}.{b}.0/24"
    hp = random.randint(20000, 40000)
    with upstream(f"10.{a}.{b + 1}") as (up_pid, host_if, host_ip, up_ip):
        path = tmp_path / "svc.yaml"
        code = INSIDE.format(up_ip=up_ip)
        path.write_text(SERVICE.format(bridge=bridge, subnet=subnet, egress=host_if, port=hp,
                                        code=json.dumps(code)))
        upstream_server = in_netns(up_pid, echo_server, up_ip, 7003)
        run = subprocess.Popen([sys.executable, "-m", "vbdecl", "run", "--state-dir", str(state_dir), str(path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert result(upstream_server) == [host_ip]          # masqueraded out of the egress
            # the published port, from the upstream namespace through the host
            assert result(in_netns(up_pid, echo_client, host_ip, hp, "in")) == "in"
            out, err = run.communicate(timeout=30)
        finally:
            if run.poll() is None:
                run.kill()
                run.communicate()
        assert run.returncode == 0, err
        assert "upstream said out" in out
        assert f"peer {up_ip}" in out
        assert_nat_gone()


def test_a_failed_bridge_join_leaves_no_record_of_the_run(tmp_path: Path, state_dir: Path) -> None:
    """A run whose bridge cannot be joined (its name taken by an interface that is no
    bridge) leaves nothing in the shared network state (the unprivileged case, where
    an instance stayed: test_runtime_unprivileged.py)."""
    name = f"vbt{secrets.token_hex(4)}"
    subnet = f"10.{random.randint(100, 250)}.{random.randrange(0, 250, 2)}.0/24"
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"], check=True)
    try:
        path = tmp_path / "env.yaml"
        path.write_text(MANIFEST.format(bridge=name, subnet=subnet))
        out = subprocess.run([sys.executable, "-m", "vbdecl", "run", "--state-dir", str(state_dir), str(path)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 125 and "exists and is not a bridge" in out.stderr, out.stderr
        st = shared.read(str(state_dir))
        assert st["instances"] == {} and st["bridges"] == {} and st["leases"] == {}, st
    finally:
        subprocess.run(["ip", "link", "del", name], check=True)

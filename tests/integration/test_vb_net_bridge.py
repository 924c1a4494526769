"""``vb --net-bridge NAME`` joins a bridge vbdecl made with the subnet it serves.

A new-user review: on a bridge an environment had made with 10.231.1.0/24, vb
failed ("bridge NAME serves 10.231.1.0/24, but this environment asks for
10.88.0.0/24"), and vb has no option for a subnet. vb now asks for the subnet
the bridge serves: the one the state root records, or, from another state
root, that of the gateway address on a bridge vbdecl made (ifalias "vbdecl").
"""

from __future__ import annotations

import ipaddress
import os
import random
import secrets
import subprocess
import sys
from pathlib import Path

from testmanifests import bridged

BIN = Path(sys.executable).parent


def cli(state: Path, prog: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBDECL_") or k == "VBDECL_CACHE_DIR"}
    env["VBDECL_CACHE_DIR"] = str(state.parent / "cache")
    env["VBDECL_STATE_DIR"] = str(state)
    return subprocess.run([str(BIN / prog), *args], capture_output=True, text=True, env=env, timeout=120)


VB_ROOT = ["--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
           "--symlink", "usr/lib64", "/lib64", "--proc", "/proc", "--dev", "/dev"]
# eth0's IPv4 address, from inside (no ip(8) needed): the kernel's own table
SHOW_ADDR = ["/usr/bin/python3", "-c",
             "import fcntl, socket, struct; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
             "print(socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, struct.pack('256s', b'eth0'))[20:24]))"]


def test_vb_joins_a_vbdecl_bridge_with_its_subnet(tmp_path: Path) -> None:
    state, other = tmp_path / "state", tmp_path / "other-state"
    br, name = f"vbt{secrets.token_hex(4)}", f"vb{secrets.token_hex(4)}"
    subnet = f"10.{random.randint(100, 250)}.{random.randrange(0, 250, 2)}.0/24"
    m = tmp_path / f"{name}.yaml"
    m.write_text(bridged("{name}", "    dns: [192.0.2.53]\n").format(name=name, bridge=br, subnet=subnet)
                 + '  process: {command: ["/bin/sleep", "300"]}\n')
    out = cli(state, "vbdecl", "apply", "-y", str(m))
    assert out.returncode == 0, out.stdout + out.stderr
    try:
        assert Path(f"/sys/class/net/{br}/ifalias").read_text().strip() == "vbdecl"
        for root in (state, other):     # recorded in the state root; from another: the kernel's
            out = cli(root, "vb", *VB_ROOT, "--net-bridge", br, "--", *SHOW_ADDR)
            assert out.returncode == 0, (root, out.stderr)
            assert ipaddress.ip_address(out.stdout.strip()) in ipaddress.ip_network(subnet), out.stdout
            out = cli(root, "vb", "--print-manifest", *VB_ROOT, "--net-bridge", br, "--", "/bin/true")
            assert f"subnet: {subnet}" in out.stdout, out.stdout
    finally:
        assert cli(state, "vbdecl", "destroy", "-y", name).returncode == 0
    assert not Path(f"/sys/class/net/{br}").exists()

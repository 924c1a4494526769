"""``vb --net-bridge NAME``: the subnet vb asks for, and the hint when that fails.

A new-user review: vb --net-bridge on a bridge vbdecl already served with another
subnet failed ("bridge NAME serves 10.231.1.0/24, but this environment asks for
10.88.0.0/24"), though vb has no option for a subnet.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vbdecl.errors import ActionError, ConflictError
from vbdecl.vb import bridge

Links = dict[str, dict[str, object]]


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> tuple[Links, dict[str, object]]:
    """Interfaces as vb sees them (name -> {bridge, alias, net}), and the bridges the
    shared network state of the state root records."""
    from vbdecl.net import shared
    from vbdecl.sys import netdev

    links: dict[str, dict[str, object]] = {}
    served: dict[str, object] = {}
    monkeypatch.setattr(netdev, "exists", lambda n: n in links)
    monkeypatch.setattr(netdev, "is_bridge", lambda n: bool(links.get(n, {}).get("bridge")))
    monkeypatch.setattr(netdev, "alias", lambda n: links.get(n, {}).get("alias"))
    monkeypatch.setattr(netdev, "ipv4_network", lambda n: links.get(n, {}).get("net"))
    monkeypatch.setattr(shared, "read", lambda state_dir: {"bridges": served})
    return links, served


def test_the_alias_is_the_one_vbdecl_gives_its_bridges() -> None:
    from vbdecl.ops.net import BRIDGE_ALIAS

    assert bridge.VBDECL_ALIAS == BRIDGE_ALIAS


def test_a_bridge_vbdecl_serves_or_made_keeps_its_subnet(host: tuple[Links, dict[str, object]]) -> None:
    links, served = host
    assert bridge.subnet_for("vbnew0") == "10.88.0.0/24"        # no such bridge
    links["ours"] = {"bridge": True, "alias": "vbdecl", "net": "10.231.1.0/24"}
    assert bridge.subnet_for("ours") == "10.231.1.0/24"         # made by vbdecl (any state root)
    links["docker0"] = {"bridge": True, "alias": None, "net": "172.17.0.0/16"}
    assert bridge.subnet_for("docker0") == "10.88.0.0/24"       # not vbdecl's: never its subnet
    links["bare"] = {"bridge": True, "alias": "vbdecl", "net": None}
    assert bridge.subnet_for("bare") == "10.88.0.0/24"          # no IPv4 address to go by
    links["eth9"] = {"bridge": False, "alias": "vbdecl", "net": "10.1.2.0/24"}
    assert bridge.subnet_for("eth9") == "10.88.0.0/24"          # no bridge
    served["docker0"] = {"subnet": "10.99.0.0/24", "users": ["vb-1"]}
    served["ours"] = {"subnet": "10.231.1.0/24", "users": []}
    # what this state root records for it is what the bridge op compares with
    assert bridge.subnet_for("docker0") == "10.99.0.0/24"
    assert bridge.subnet_for("ours") == "10.231.1.0/24"


def test_the_hint_names_what_vb_can_do(host: tuple[Links, dict[str, object]]) -> None:
    links, _served = host
    overlap = ConflictError("subnet 10.88.0.0/24 overlaps the host route 10.88.0.0/24 on vbdecl0",
                            hint="choose a subnet no host interface uses (network.subnet)")
    said = bridge.hint("br1", "10.88.0.0/24", overlap) or ""
    assert "new bridge the subnet 10.88.0.0/24" in said and "convert --from-bwrap" in said
    assert "network.subnet" in said and "--subnet" not in said
    links["docker0"] = {"bridge": True, "alias": None, "net": "172.17.0.0/16"}
    said = bridge.hint("docker0", "10.88.0.0/24", overlap) or ""
    assert "docker0 was not made by vbdecl" in said and 'ifalias is not "vbdecl"' in said
    links["eth9"] = {"bridge": False}
    said = bridge.hint("eth9", "10.88.0.0/24", ConflictError("interface eth9 exists and is not a bridge"))
    assert said == "eth9 is no bridge: give --net-bridge the name of a bridge, or a new name"
    assert bridge.hint("br1", "10.88.0.0/24", ConflictError("port 80 is in use")) is None
    # an unprivileged review was sent to subnets and manifests
    said = bridge.hint("br1", "10.88.0.0/24", ConflictError("creating bridge br1: needs CAP_NET_ADMIN: run as root"))
    assert said is not None and said.startswith("bridge networking needs root") and "subnet" not in said
    # and so is one on a bridge that was there, whose veth failed (no hint: a user's review)
    veth = ActionError("creating veth vb9ca88e88h: needs CAP_NET_ADMIN: run as root", action="net.veth")
    assert (bridge.hint("br1", "10.88.0.0/24", veth) or "").startswith("bridge networking needs root")


def test_the_subnet_lookup_is_made_only_with_net_bridge_and_imports_no_netlink(tmp_path: Path) -> None:
    code = ("import sys\nfrom vbdecl.cli.vb import main\n"
            "main(['vb', '--print-manifest', '--ro-bind', '/usr', '/usr', ARGS '/bin/true'])\n"
            "print('MODS', ' '.join(sorted(m for m in sys.modules if m.startswith("
            "('pyroute2', 'vbdecl.vb.bridge', 'vbdecl.sys.netdev', 'vbdecl.ops.net')))))\n")
    for args, want in (("", ""), ("'--net-bridge', 'vbh5none0',", "vbdecl.sys.netdev vbdecl.vb.bridge")):
        out = subprocess.run([sys.executable, "-c", code.replace("ARGS", args)], capture_output=True,
                             text=True, timeout=60, env={**os.environ, "VBDECL_STATE_DIR": str(tmp_path)})
        assert out.returncode == 0, out.stderr
        mods = out.stdout.rsplit("MODS", 1)[1].strip()
        assert mods == want, (args, mods)
        if args:
            assert "subnet: 10.88.0.0/24" in out.stdout

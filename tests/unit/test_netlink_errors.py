"""Netlink and nftables error translation, and the nftables commands: no root."""

from __future__ import annotations

import errno
import sys

import pytest

from vbdecl.errors import ConflictError, SysError
from vbdecl.ops import nat
from vbdecl.sys import netlink, nft


class FakeNetlinkError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def test_eperm_says_run_as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netlink.os, "geteuid", lambda: 1000)
    err = netlink.translate(FakeNetlinkError(errno.EPERM), "creating bridge vbdecl0")
    assert isinstance(err, SysError)
    assert "needs CAP_NET_ADMIN: run as root" in str(err)
    assert err.hint


def test_eacces_as_root_is_no_call_for_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """A review: adding an IPv6 address where IPv6 is off (EACCES) said "needs
    CAP_NET_ADMIN: run as root" to root."""
    monkeypatch.setattr(netlink.os, "geteuid", lambda: 0)
    err = netlink.translate(FakeNetlinkError(errno.EACCES), "adding fd00::1/64 to br0")
    assert isinstance(err, SysError) and "run as root" not in str(err) and "EACCES" in str(err)
    assert err.hint and "disable_ipv6" in err.hint


def test_eexist_is_a_conflict_naming_the_interface() -> None:
    err = netlink.translate(FakeNetlinkError(errno.EEXIST), "creating veth", name="vb1a2b3c4dh")
    assert isinstance(err, ConflictError)
    assert str(err).startswith("interface vb1a2b3c4dh exists and is not owned by vbdecl")


def test_other_errno_names_it() -> None:
    err = netlink.translate(FakeNetlinkError(errno.ENETUNREACH), "adding route")
    assert isinstance(err, SysError) and err.errno == errno.ENETUNREACH
    assert "ENETUNREACH" in str(err)


def test_nft_errors() -> None:
    e = nft.translate("Error: Could not process rule: Operation not permitted\n", "publishing port 80/tcp")
    assert isinstance(e, SysError) and "run as root" in str(e)
    e = nft.translate("Error: Could not process rule: File exists\n", "publishing port 80/tcp")
    assert isinstance(e, ConflictError)


def test_importing_ops_does_not_import_pyroute2() -> None:
    import vbdecl.ops.nat
    import vbdecl.ops.net
    import vbdecl.sys.netlink
    import vbdecl.sys.nft  # noqa: F401

    code = ("import sys, vbdecl.ops.net, vbdecl.ops.nat, vbdecl.sys.netlink, vbdecl.sys.nft; "
            "bad=[m for m in sys.modules if m.startswith(('pyroute2','pydantic','rich'))]; "
            "assert not bad, bad")
    import subprocess

    subprocess.run([sys.executable, "-c", code], check=True)


def test_nat_commands_are_tagged_and_scoped() -> None:
    add = nat.port_add("vb-1a2b3c4d", {"host": 8080, "container": 80, "protocol": "tcp", "host_ip": None},
                       "10.88.0.5", None)
    chain = "vb-1a2b3c4d-tcp-8080"
    assert add[0] == {"add": {"chain": {"family": "inet", "table": "vbdecl", "name": chain}}}
    rules = [c["add"]["rule"] for c in add if c.get("add", {}).get("rule", {}).get("chain") == chain]
    assert len(rules) == 1 and rules[0]["comment"] == "vb-1a2b3c4d"
    assert {"dnat": {"family": "ip", "addr": "10.88.0.5", "port": 80}} in rules[0]["expr"]
    elem = next(c["create"]["element"] for c in add if c.get("create", {}).get("element", {}).get("name") == "ports")
    assert elem["elem"][0][0]["elem"]["comment"] == "vb-1a2b3c4d"
    delete = nat.port_delete("vb-1a2b3c4d", "tcp", 8080)
    assert [next(iter(c)) for c in delete] == ["delete", "flush", "delete"]
    # host_ip of the other family: no rule for that family
    v6only = nat.port_add("vb-1", {"host": 1, "container": 2, "protocol": "udp", "host_ip": "::1"},
                          "10.0.0.2", "fd00::2")
    fams = [c["add"]["rule"]["expr"][-1]["dnat"]["family"] for c in v6only
            if c.get("add", {}).get("rule", {}).get("chain") == "vb-1-udp-1"]
    assert fams == ["ip6"]


def test_base_commands_reset_the_table() -> None:
    cmds = nat.base_commands()
    assert cmds[0] == {"add": {"table": {"family": "inet", "name": "vbdecl"}}}
    assert cmds[1] == {"delete": {"table": {"family": "inet", "name": "vbdecl"}}}
    hooks = {c["add"]["chain"]["hook"] for c in cmds if "chain" in c.get("add", {})}
    assert hooks == {"postrouting", "prerouting", "output"}


def test_undo_of_add_commands() -> None:
    add = nat.masquerade_add("vb-1", "eth0", ["10.0.0.2"], ["fd00::2"])
    undo = nat._undo_of(add)
    kinds = [(next(iter(c)), next(iter(next(iter(c.values()))))) for c in undo]
    # elements first (they jump to the chain), then flush and delete the chain
    assert kinds[:2] == [("delete", "element"), ("delete", "element")]
    assert kinds[2:] == [("flush", "chain"), ("delete", "chain")]
    assert undo[0]["delete"]["element"]["elem"] in (["10.0.0.2"], ["fd00::2"])


@pytest.mark.parametrize(("code", "outcome"), [(None, True), (errno.EEXIST, False), (errno.EOPNOTSUPP, True),
                                               (errno.EINVAL, SysError)])
def test_an_alternative_name_is_a_claim(monkeypatch: pytest.MonkeyPatch, code: int | None,
                                        outcome: object) -> None:
    """Taken (EEXIST) is False; a kernel without alternative names claims nothing and
    stands in no one's way (True); anything else is an error."""
    monkeypatch.setattr(netlink, "_netlink_error", lambda: FakeNetlinkError)

    class Ipr:
        def link(self, *args: object, **kw: object) -> None:
            if code is not None:
                raise FakeNetlinkError(code)

    if outcome is SysError:
        with pytest.raises(SysError, match=r"naming interface #7 br0@10\.0\.0\.5"):
            netlink.altname_add(Ipr(), 7, "br0@10.0.0.5")
    else:
        assert netlink.altname_add(Ipr(), 7, "br0@10.0.0.5") is outcome

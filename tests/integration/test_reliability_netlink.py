"""Every netlink error we can provoke becomes a clear vbdecl error.

A forked child unshares a private network namespace (nothing reaches the
host's) and drives vbdecl.sys.netlink into each failure the kernel can give:
an existing interface, a name too long or malformed, a missing device, a
duplicate or malformed address, an unreachable or duplicate route, an MTU out
of range, a veth into something that is not a network namespace, an
environment process that is gone, and a caller without CAP_NET_ADMIN. Each
must be a VbdeclError whose message says what was being done, on which
object, and what went wrong (errno name or a plain sentence), never a raw
pyroute2/OSError exception.
"""

from __future__ import annotations

import ctypes
import json
import os
from typing import Any

import pytest

CLONE_NEWNET = 0x40000000


def _provoke() -> list[dict[str, Any]]:
    from vbdecl.errors import VbdeclError
    from vbdecl.sys import netlink as nl

    out: list[dict[str, Any]] = []

    def attempt(case: str, fn: Any) -> None:
        try:
            fn()
        except VbdeclError as err:
            out.append({"case": case, "type": type(err).__name__, "vbdecl": True,
                        "message": err.message if hasattr(err, "message") else str(err),
                        "text": str(err), "hint": getattr(err, "hint", None)})
        except Exception as err:
            out.append({"case": case, "type": type(err).__name__, "vbdecl": False, "text": str(err)})
        else:
            out.append({"case": case, "type": None})

    with nl.Session() as s:
        ipr = s.host
        nl.bridge_create(ipr, "vbx0", mtu=None, alias="vbdecl:test")
        idx = nl.index_of(ipr, "vbx0")
        assert idx is not None
        nl.address_add(ipr, idx, "10.9.0.1", 24, ifname="vbx0")
        nl.default_route_add(ipr, "10.9.0.254", idx, ifname="vbx0")
        netns = os.open("/proc/self/ns/net", os.O_RDONLY)
        plain = os.open("/proc/self/stat", os.O_RDONLY)
        closed = os.open("/dev/null", os.O_RDONLY)
        os.close(closed)
        attempt("bridge exists", lambda: nl.bridge_create(ipr, "vbx0", mtu=None, alias="a"))
        attempt("name too long", lambda: nl.bridge_create(ipr, "x" * 20, mtu=None, alias="a"))
        attempt("name malformed", lambda: nl.bridge_create(ipr, "a/b", mtu=None, alias="a"))
        attempt("address on a missing device", lambda: nl.address_add(ipr, 9999, "10.9.0.2", 24, ifname="vbnope"))
        attempt("address twice", lambda: nl.address_add(ipr, idx, "10.9.0.1", 24, ifname="vbx0"))
        attempt("address malformed", lambda: nl.address_add(ipr, idx, "10.9.0.300", 24, ifname="vbx0"))
        attempt("route unreachable", lambda: nl.default_route_add(ipr, "10.99.0.1", idx, ifname="vbx0"))
        attempt("route twice", lambda: nl.default_route_add(ipr, "10.9.0.254", idx, ifname="vbx0"))
        attempt("mtu too large", lambda: nl.link_up(ipr, idx, "vbx0", mtu=100000))
        attempt("mtu too small", lambda: nl.link_up(ipr, idx, "vbx0", mtu=10))
        attempt("veth into a file", lambda: nl.veth_create(ipr, "vbv0", "eth0", netns_fd=plain, master=idx,
                                                           mtu=None))
        attempt("veth into a closed fd", lambda: nl.veth_create(ipr, "vbv1", "eth0", netns_fd=closed,
                                                                master=idx, mtu=None))
        attempt("veth with a missing master", lambda: nl.veth_create(ipr, "vbv2", "eth0", netns_fd=netns,
                                                                     master=9999, mtu=None))
        attempt("environment gone", lambda: nl.open_netns(2**22 + 1))
        attempt("interface missing in the environment", lambda: nl.up_in(netns, "nope0"))
        os.close(netns)
        os.close(plain)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:   # without privileges
        os.close(r)
        try:
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            res: list[dict[str, Any]] = []
            out.clear()
            with nl.Session() as s:
                attempt("bridge without CAP_NET_ADMIN", lambda: nl.bridge_create(s.host, "vbx9", mtu=None,
                                                                                 alias="a"))
            attempt("forwarding without CAP_NET_ADMIN", lambda: nl.sysctl_set(nl.FORWARD["4"], "1"))
            res = out
            os.write(w, json.dumps(res).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return [*out, *json.loads(data or b"[]")]


def _in_private_netns() -> list[dict[str, Any]]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "unshare")
            os.write(w, json.dumps(_provoke()).encode())
            code = 0
        except BaseException as exc:
            os.write(w, json.dumps({"error": repr(exc)}).encode())
        finally:
            os._exit(code)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    result = json.loads(data)
    assert isinstance(result, list), result
    return result


@pytest.fixture(scope="module")
def results() -> dict[str, dict[str, Any]]:
    return {r["case"]: r for r in _in_private_netns()}


EXPECT = {
    # case: (error class, fragments the message must hold)
    "bridge exists": ("ConflictError", ["interface vbx0 exists", "ip link del vbx0"]),
    "name too long": ("SysError", ["creating bridge xxxxxxxxxxxxxxxxxxxx", "15"]),
    "name malformed": ("SysError", ["creating bridge a/b", "EINVAL"]),
    "address on a missing device": ("SysError", ["10.9.0.2/24", "vbnope", "ENODEV"]),
    "address twice": ("ConflictError", ["address 10.9.0.1/24 is already on vbx0"]),
    "address malformed": ("SysError", ["10.9.0.300"]),
    "route unreachable": ("SysError", ["default route via 10.99.0.1 on vbx0", "ENETUNREACH"]),
    "route twice": ("ConflictError", ["default route already exists"]),
    "mtu too large": ("SysError", ["vbx0", "mtu 100000"]),
    "mtu too small": ("SysError", ["vbx0", "mtu 10"]),
    "veth into a file": ("SysError", ["creating veth vbv0", "EINVAL"]),
    "veth into a closed fd": ("SysError", ["creating veth vbv1", "EBADF"]),
    "veth with a missing master": ("SysError", ["creating veth vbv2", "EINVAL"]),
    "environment gone": ("SysError", ["is gone", "cannot be entered"]),
    "interface missing in the environment": ("SysError", ["nope0 does not exist"]),
    "bridge without CAP_NET_ADMIN": ("SysError", ["creating bridge vbx9", "run as root"]),
    "forwarding without CAP_NET_ADMIN": ("SysError", ["ip_forward", "run as root"]),
}


@pytest.mark.parametrize("case", sorted(EXPECT))
def test_netlink_error_is_clear(results: dict[str, dict[str, Any]], case: str) -> None:
    r = results[case]
    cls, fragments = EXPECT[case]
    assert r["type"] is not None, f"{case}: no error at all"
    assert r["vbdecl"], f"{case}: a raw {r['type']} escaped: {r['text']}"
    assert r["type"] == cls, r
    for frag in fragments:
        assert frag in r["text"], (case, frag, r["text"])
    assert "NetlinkError" not in r["text"] and "Traceback" not in r["text"]

"""Facts about a host network interface, read cheaply: sysfs and two ioctls.

For ``vb --net-bridge NAME`` (the start-up of vb, which imports no netlink
library to learn which subnet an existing bridge serves). Stdlib only; what
cannot be read is None. The interface is looked up in the network namespace
whose sysfs is mounted at /sys (the host's, for vb) and, for the address, the
caller's.
"""

from __future__ import annotations

import os

SIOCGIFADDR = 0x8915
SIOCGIFNETMASK = 0x891B


def _dir(name: str) -> str | None:
    if not name or "/" in name or name in (".", "..") or len(name) > 15:
        return None
    return f"/sys/class/net/{name}"


def exists(name: str) -> bool:
    d = _dir(name)
    return d is not None and os.path.exists(d)


def is_bridge(name: str) -> bool:
    d = _dir(name)
    return d is not None and os.path.isdir(f"{d}/bridge")


def alias(name: str) -> str | None:
    """The interface's ifalias (``ip link set NAME alias TEXT``), None if it has none."""
    d = _dir(name)
    if d is None:
        return None
    try:
        with open(f"{d}/ifalias", encoding="utf-8", errors="replace") as f:
            text = f.read().strip()
    except OSError:
        return None
    return text or None


def ipv4_network(name: str) -> str | None:
    """``a.b.c.0/N``: the network of the interface's (primary) IPv4 address and mask."""
    import _struct as struct
    import fcntl
    import socket

    if _dir(name) is None:
        return None
    req = struct.pack("16s16x", name.encode())
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            addr = fcntl.ioctl(s.fileno(), SIOCGIFADDR, req)[20:24]
            mask = fcntl.ioctl(s.fileno(), SIOCGIFNETMASK, req)[20:24]
    except OSError:     # no such interface, or no IPv4 address (EADDRNOTAVAIL)
        return None
    a, m = int.from_bytes(addr, "big"), int.from_bytes(mask, "big")
    plen = bin(m).count("1")
    if plen == 0 or m != (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF:
        return None
    return f"{socket.inet_ntoa((a & m).to_bytes(4, 'big'))}/{plen}"

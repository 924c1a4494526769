"""Which host sockets receive on a port, and which processes hold them.

:func:`receivers` asks the kernel's sock_diag netlink interface (what ``ss``
uses) for the TCP listeners or the UDP sockets without a peer of the caller's
network namespace; it reports ``IPV6_V6ONLY``, which decides
whether a socket on ``::`` also receives IPv4. Without sock_diag (a kernel
without the inet/udp diag modules) it reads ``/proc/net/{tcp,udp}{,6}``,
where that flag is unknown. :func:`holders` maps socket inodes to the
processes that have them open, from ``/proc/*/fd``.

Stdlib only: the published-port check of ``vbdecl run`` uses it.
"""

from __future__ import annotations

import _struct as struct
import os
import socket

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
INET_DIAG_SKV6ONLY = 11
TCP_ESTABLISHED, TCP_CLOSE, TCP_LISTEN = 1, 7, 10
PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
_MSG_LEN = 72                          # struct inet_diag_msg


def receivers(protocol: str, port: int) -> list[dict[str, object]]:
    """The sockets that receive what arrives on ``port``/``protocol`` in this network
    namespace: TCP listeners, UDP sockets without a peer. Each is ``{"family": 4|6,
    "address": str, "port": int, "uid": int, "inode": int, "v6only": bool|None}``."""
    try:
        found = [s for fam in (socket.AF_INET, socket.AF_INET6) for s in _diag(fam, protocol)]
    except OSError:
        found = _proc_net(protocol)
    return [s for s in found if s["port"] == port]


def _diag(family: int, protocol: str) -> list[dict[str, object]]:
    states = 1 << TCP_LISTEN if protocol == "tcp" else 1 << TCP_CLOSE
    req = struct.pack("=BBBBI", family, PROTOCOLS[protocol], 0, 0, states) + bytes(48)
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)
    out: list[dict[str, object]] = []
    try:
        nl.send(struct.pack("=IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
                + req)
        while True:
            data = nl.recv(1 << 17)
            if not data:
                return out
            off = 0
            while off + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, off)
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", data, off + 16)[0]
                    raise OSError(code, f"sock_diag: {os.strerror(code)}")
                entry = _parse(data[off + 16:off + length])
                if entry is not None:
                    out.append(entry)
                off += (max(length, 16) + 3) & ~3
    finally:
        nl.close()


def _parse(msg: bytes) -> dict[str, object] | None:
    if len(msg) < _MSG_LEN:
        return None
    family = msg[0]
    (sport,) = struct.unpack_from(">H", msg, 4)       # ports are in network byte order
    src = msg[8:24]
    uid, inode = struct.unpack_from("=II", msg, 64)
    v6only = None
    at = _MSG_LEN
    while at + 4 <= len(msg):
        alen, atype = struct.unpack_from("=HH", msg, at)
        if alen < 4:
            break
        if atype == INET_DIAG_SKV6ONLY and alen >= 5:
            v6only = bool(msg[at + 4])
        at += (alen + 3) & ~3
    address = socket.inet_ntop(family, src[:4] if family == socket.AF_INET else src)
    return {"family": 4 if family == socket.AF_INET else 6, "address": address, "port": sport,
            "uid": uid, "inode": inode, "v6only": v6only}


def _proc_net(protocol: str) -> list[dict[str, object]]:
    """The fallback: ``/proc/net/<protocol>{,6}`` (IPV6_V6ONLY is not shown there)."""
    want = f"{TCP_LISTEN:02X}" if protocol == "tcp" else f"{TCP_CLOSE:02X}"
    out: list[dict[str, object]] = []
    for fam, name in ((4, protocol), (6, protocol + "6")):
        try:
            with open(f"/proc/net/{name}") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != want:
                continue
            hexaddr, _, hexport = fields[1].partition(":")
            raw = bytes.fromhex(hexaddr)
            # the kernel prints each 32-bit word in host (little-endian) order
            packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            address = socket.inet_ntop(socket.AF_INET if fam == 4 else socket.AF_INET6, packed)
            out.append({"family": fam, "address": address, "port": int(hexport, 16),
                        "uid": int(fields[7]), "inode": int(fields[9]), "v6only": None})
    return out


def holders(inodes: set[int], limit: int = 5) -> dict[int, list[tuple[int, str]]]:
    """``{inode: [(pid, command name), ...]}`` of the processes that have these sockets
    open (at most ``limit`` per socket); a socket no process shows stays out."""
    want = {f"socket:[{i}]": i for i in inodes}
    out: dict[int, list[tuple[int, str]]] = {}
    if not want:
        return out
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{name}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                inode = want.get(os.readlink(f"/proc/{name}/fd/{fd}"))
            except OSError:
                continue
            if inode is None or len(out.get(inode, [])) >= limit:
                continue
            try:
                with open(f"/proc/{name}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                comm = "?"
            pids = out.setdefault(inode, [])
            if all(p != int(name) for p, _ in pids):
                pids.append((int(name), comm))
    return out

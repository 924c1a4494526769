"""rtnetlink through pyroute2, with errors people can act on.

pyroute2 is imported here, lazily, on first use: a plan without networking
never pays for it. A :class:`Session` holds one netlink socket in the host's
network namespace and one per environment namespace; the environment's
socket is created by entering its namespace with ``setns`` on this thread,
opening the socket (a netlink socket stays bound to the namespace it was
created in) and returning at once. No helper process, no ``ip`` command.

Every pyroute2 ``NetlinkError`` is translated into a
:class:`~vbdecl.errors.SysError` (or a :class:`~vbdecl.errors.ConflictError`
when an object is in the way) that names the object and says what to do.
"""

from __future__ import annotations

import errno
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from vbdecl.errors import ConflictError, SysError

CLONE_NEWNET = 0x40000000
AF_INET = 2
AF_INET6 = 10
NUD_NOARP = 0x40        # (a bridge's "static" forwarding entry)
NTF_MASTER = 0x04
RT_TABLE_MAIN = 254
RT_TABLE_LOCAL = 255
RTN_LOCAL = 2

T = TypeVar("T")

_ROOT_HINT = "run vbdecl as root (sudo), or use network.mode isolated or host"


def _iproute_class() -> Any:
    try:
        from pyroute2 import IPRoute
    except ImportError as err:  # pragma: no cover - a dependency of the package
        raise SysError(f"networking needs the Python package pyroute2, which is not importable: {err}",
                       hint="pip install pyroute2 (it is a dependency of vbdecl)") from err
    return IPRoute


def _netlink_error() -> type[Exception]:
    from pyroute2.netlink.exceptions import NetlinkError

    cls: type[Exception] = NetlinkError
    return cls


def translate(err: Exception, what: str, *, name: str | None = None) -> Exception:
    """A people-facing error for a failed netlink request ``what``."""
    code = getattr(err, "code", None) or getattr(err, "errno", None) or 0
    if code in (errno.EPERM, errno.EACCES) and os.geteuid() != 0:
        return SysError(f"{what}: needs CAP_NET_ADMIN: run as root", errno=code, hint=_ROOT_HINT)
    if code in (errno.EPERM, errno.EACCES):
        return SysError(f"{what}: the kernel refused it ({errno.errorcode[code]})", errno=code,
                        hint="for an IPv6 address or route: IPv6 may be off on that interface or "
                             "on the host (net.ipv6.conf.*.disable_ipv6)")
    if code == errno.EEXIST and name:
        return ConflictError(f"interface {name} exists and is not owned by vbdecl",
                             hint=f"it was not made by this environment; remove it if it is stale "
                                  f"(ip link del {name}) or choose another name")
    if code == errno.ERANGE and name:
        return SysError(f"{what}: the interface name {name!r} is {len(name)} characters; Linux allows 1 to 15",
                        errno=code, hint="choose a shorter name")
    if code == errno.ENODEV and name:
        return SysError(f"{what}: interface {name} does not exist", errno=code,
                        hint="it may have been removed behind vbdecl's back; `vbdecl plan` shows drift")
    text = os.strerror(code) if code else str(err)
    return SysError(f"{what}: {text} ({errno.errorcode.get(code, code)})", errno=code)


def _call(what: str, fn: Callable[[], T], *, name: str | None = None) -> T:
    try:
        return fn()
    except _netlink_error() as err:
        raise translate(err, what, name=name) from None
    except OSError as err:
        raise translate(err, what, name=name) from None
    except (ValueError, TypeError, struct_error()) as err:   # pyroute2 could not encode a value
        raise SysError(f"{what}: invalid value: {err}", errno=errno.EINVAL) from None


def struct_error() -> type[Exception]:
    import struct

    return struct.error


def _check_name(what: str, name: str) -> None:
    if not name or len(name) > 15:
        raise SysError(f"{what}: the interface name is {len(name)} characters; Linux allows 1 to 15",
                       errno=errno.ERANGE, hint="choose a shorter name")


# --- namespaces ---------------------------------------------------------------

def open_netns(pid: int) -> int:
    """An fd on the network namespace of ``pid`` (close it yourself)."""
    try:
        return os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SysError(f"the environment's process {pid} is gone: its network namespace cannot be entered",
                       errno=errno.ESRCH, hint="apply the environment again") from None
    except PermissionError as err:
        raise SysError(f"opening /proc/{pid}/ns/net: needs CAP_SYS_ADMIN: run as root",
                       errno=err.errno or 0, hint=_ROOT_HINT) from None


def netns_id(pid: int | None) -> int | None:
    """The inode of the network namespace of ``pid``; None if it is gone."""
    if pid is None:
        return None
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def _setns(fd: int) -> None:
    from vbdecl.sys.raw import check, syscall

    check(syscall("setns", fd, CLONE_NEWNET), "setns(CLONE_NEWNET)")


@contextmanager
def entered(ns_fd: int) -> Iterator[None]:
    """Run the body with this thread inside the namespace ``ns_fd``."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(ns_fd)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def up_in(ns_fd: int, name: str) -> tuple[int, bool]:
    """Bring link ``name`` up inside the namespace ``ns_fd`` with ioctls (no
    pyroute2, no netlink round trip); its ifindex, and whether it was down."""
    import fcntl
    import socket
    import struct

    with entered(ns_fd):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    with sock:
        ifname = name.encode()
        try:
            index = struct.unpack("16si20x", fcntl.ioctl(sock, 0x8933, struct.pack("16si20x", ifname, 0)))[1]
            flags = struct.unpack("16sH22x", fcntl.ioctl(sock, 0x8913, struct.pack("16sH22x", ifname, 0)))[1]
        except OSError as err:
            if err.errno == errno.ENODEV:
                raise SysError(f"interface {name} does not exist in the environment", errno=err.errno,
                               hint="net.veth did not land; apply the environment again") from None
            raise translate(err, f"looking up {name} in the environment") from None
        if flags & 1:
            return index, False
        try:   # SIOCSIFFLAGS
            fcntl.ioctl(sock, 0x8914, struct.pack("16sH22x", ifname, flags | 1))
        except OSError as err:
            raise translate(err, f"bringing {name} up in the environment") from None
        return index, True


def loopback_up(pid: int) -> bool:
    """Bring ``lo`` up in the network namespace of ``pid`` (isolated
    environments need nothing else, and never import pyroute2)."""
    fd = open_netns(pid)
    try:
        return up_in(fd, "lo")[1]
    finally:
        os.close(fd)


# --- sessions -------------------------------------------------------------------

class Session:
    """Netlink sockets for one op call: the host's, and per environment namespace.

    Use it in ONE thread: pyroute2's synchronous API keeps a socket and an
    event loop per thread, and a socket lazily made in another thread would
    be bound to *that* thread's namespace (for an environment socket: the
    host's). A session refuses to be used from another thread; close it (or
    use it as a context manager) when done; garbage collection closes it too.
    """

    def __init__(self) -> None:
        self._host: Any = None
        self._envs: dict[int, Any] = {}       # netns inode -> IPRoute
        self._all: list[Any] = []
        self._tid = threading.get_ident()
        self._finalizer = weakref.finalize(self, _close_all, self._all)

    def _check_thread(self) -> None:
        if threading.get_ident() != self._tid:  # pragma: no cover - a programming error
            raise RuntimeError("a netlink Session is used from a thread other than its own")

    @property
    def host(self) -> Any:
        self._check_thread()
        if self._host is None:
            self._host = _call("opening a netlink socket", _iproute_class())
            self._all.append(self._host)
        return self._host

    def env(self, pid: int) -> Any:
        """A socket inside the network namespace of ``pid``."""
        self._check_thread()
        fd = open_netns(pid)
        try:
            ino = os.fstat(fd).st_ino
            ipr = self._envs.get(ino)
            if ipr is None:
                with entered(fd):
                    ipr = _call("opening a netlink socket in the environment", _iproute_class())
                self._envs[ino] = ipr
                self._all.append(ipr)
        finally:
            os.close(fd)
        return ipr

    def drop_envs(self) -> None:
        """Close the sockets inside environment namespaces: a socket holds its
        namespace alive, so a namespace that should die must not keep one."""
        for ipr in self._envs.values():
            self._all.remove(ipr)
            try:
                ipr.close()
            except Exception:
                pass
        self._envs.clear()

    def close(self) -> None:
        self._finalizer()
        self._host = None
        self._envs.clear()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close_all(socks: list[Any]) -> None:
    import warnings

    # (run by the garbage collector too, for a session nobody closed: maybe in the middle
    # of another socket's event loop, where pyroute2's close leaves its loop's
    # shutdown_asyncgens un-awaited, and Python would print that to the user)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        while socks:
            try:
                socks.pop().close()
            except Exception:
                pass


# --- links ----------------------------------------------------------------------

def _attr(msg: Any, name: str) -> Any:
    return msg.get_attr(name)


def _link_dict(msg: Any) -> dict[str, Any]:
    info = _attr(msg, "IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    return {
        "index": msg["index"],
        "name": _attr(msg, "IFLA_IFNAME"),
        "kind": kind,
        "master": _attr(msg, "IFLA_MASTER"),
        "alias": _attr(msg, "IFLA_IFALIAS"),
        "altnames": _altnames(msg),
        "mtu": _attr(msg, "IFLA_MTU"),
        "up": bool(msg["flags"] & 1),
        "mac": _attr(msg, "IFLA_ADDRESS"),
    }


def _altnames(msg: Any) -> list[str]:
    props = _attr(msg, "IFLA_PROP_LIST")
    return [str(v) for k, v in (props.get("attrs") if props is not None else None) or []
            if k == "IFLA_ALT_IFNAME"]


def altname_add(ipr: Any, index: int, name: str) -> bool:
    """Give link ``index`` the alternative name ``name`` (Linux 5.5+): False if another
    link of this namespace has that name; True also where the kernel has no
    alternative names (nothing can be claimed there, nothing is in the way)."""
    try:
        ipr.link("property_add", index=index, altname=name)
    except _netlink_error() as err:
        code = getattr(err, "code", 0)
        if code == errno.EEXIST:
            return False
        if code == errno.EOPNOTSUPP:
            return True
        raise translate(err, f"naming interface #{index} {name}") from None
    return True


def altname_delete(ipr: Any, index: int, name: str) -> None:
    """Take the alternative name ``name`` from link ``index`` (gone already: nothing to do)."""
    try:
        ipr.link("property_del", index=index, altname=name)
    except _netlink_error() as err:
        if getattr(err, "code", 0) not in (errno.ENODEV, errno.ENOENT, errno.EOPNOTSUPP, errno.EINVAL):
            raise translate(err, f"removing the name {name} of interface #{index}") from None


def link(ipr: Any, name: str) -> dict[str, Any] | None:
    """The link called ``name`` (index, kind, master, alias, altnames, mtu, up), or
    None. A name too long for an interface's is looked up among alternative names."""
    try:
        msgs = ipr.link("get", **{"ifname" if len(name) < 16 else "altname": name})
    except _netlink_error() as err:
        if getattr(err, "code", 0) in (errno.ENODEV, errno.ENOENT):
            return None
        raise translate(err, f"looking up interface {name}") from None
    return _link_dict(msgs[0]) if msgs else None


def link_by_index(ipr: Any, index: int) -> dict[str, Any] | None:
    try:
        msgs = ipr.link("get", index=index)
    except _netlink_error() as err:
        if getattr(err, "code", 0) in (errno.ENODEV, errno.ENOENT):
            return None
        raise translate(err, f"looking up interface #{index}") from None
    return _link_dict(msgs[0]) if msgs else None


def links(ipr: Any) -> list[dict[str, Any]]:
    return [_link_dict(m) for m in _call("listing interfaces", lambda: ipr.get_links())]


def bridge_create(ipr: Any, name: str, *, mtu: int | None, alias: str) -> int:
    """Create bridge ``name`` (up, tagged with ``alias``, a MAC address of its own); its index.

    Without an address given, a bridge takes the lowest of its ports', and changes it
    when that port leaves: the other environments' neighbour entries for the gateway
    then pointed nowhere for ~45 s (a network review lost NAT and the gateway so, each
    time an environment was destroyed). One given at creation is kept (the kernel's
    NET_ADDR_SET), as docker gives its bridges."""
    _check_name(f"creating bridge {name}", name)
    kw: dict[str, Any] = {"ifname": name, "kind": "bridge", "state": "up", "address": random_mac()}
    what = f"creating bridge {name}"
    if mtu:
        kw["mtu"] = mtu
        what += f" with mtu {mtu}"
    _call(what, lambda: ipr.link("add", **kw), name=name)
    found = link(ipr, name)
    if found is None:  # pragma: no cover - the kernel just made it
        raise SysError(f"bridge {name} vanished right after it was created")
    _call(f"tagging bridge {name}", lambda: ipr.link("set", index=found["index"], ifalias=alias))
    refuse_routers(name)
    return int(found["index"])


# What an interface of vbdecl's (a bridge it makes, an environment's eth0) takes from its
# link: no router advertisement, no address made from one, no redirect. A process with
# NET_RAW in an environment could otherwise make itself the IPv6 default router of the
# host, through the bridge, and of the other environments on it (a security review;
# Docker's CVE-2020-13401).
_NO_ROUTERS = (("ipv6", "accept_ra"), ("ipv6", "autoconf"), ("ipv6", "accept_redirects"),
               ("ipv4", "accept_redirects"))


def refuse_routers(ifname: str) -> None:
    """Set ``ifname`` (in this thread's network namespace) to take no router
    advertisements, addresses from them or redirects (_NO_ROUTERS). Skipped for a
    family the kernel does not have (no IPv6)."""
    for family, key in _NO_ROUTERS:
        try:
            sysctl_set(f"/proc/sys/net/{family}/conf/{ifname}/{key}", "0")
        except SysError as err:
            if err.errno != errno.ENOENT:
                raise


def link_local_from_mac(ifname: str) -> None:
    """Have ``ifname`` (in this thread's network namespace) derive its IPv6 link-local
    address from its MAC (EUI-64), whatever the host's default: the guard pins it.
    Skipped without IPv6."""
    try:
        sysctl_set(f"/proc/sys/net/ipv6/conf/{ifname}/addr_gen_mode", "0")
    except SysError as err:
        if err.errno != errno.ENOENT:
            raise


def keep_address(ipr: Any, index: int, name: str) -> None:
    """Make bridge ``name`` keep the MAC address it has, where the kernel still chooses it
    from its ports (a bridge an older vbdecl made, before bridge_create gave one):
    setting it, even to what it is, makes it the bridge's own (NET_ADDR_SET)."""
    try:
        with open(f"/sys/class/net/{name}/addr_assign_type") as f:
            if f.read().strip() == "3":
                return
        msgs = ipr.link("get", index=index)
        mac = _attr(msgs[0], "IFLA_ADDRESS") if msgs else None
    except (OSError, ValueError, _netlink_error()):
        return
    if mac:
        _call(f"keeping bridge {name}'s MAC address", lambda: ipr.link("set", index=index, address=mac))


def random_mac() -> str:
    """A random unicast, locally administered MAC address."""
    octets = bytearray(os.urandom(6))
    octets[0] = (octets[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in octets)


def veth_create(ipr: Any, name: str, peer: str, *, netns_fd: int, master: int | None,
                mtu: int | None, peer_mac: str | None = None, group: int | None = None) -> None:
    """A veth pair: ``name`` here (up, enslaved to ``master``, in device ``group``),
    ``peer`` created directly in the namespace ``netns_fd`` with the MAC ``peer_mac``
    (down: bring it up with :func:`up_in`)."""
    _check_name(f"creating veth {name}", name)
    _check_name(f"creating veth {name} (peer)", peer)
    peer_spec: dict[str, Any] = {"ifname": peer, "net_ns_fd": netns_fd, "state": "up"}
    kw: dict[str, Any] = {"ifname": name, "kind": "veth", "peer": peer_spec, "state": "up"}
    if peer_mac:
        peer_spec["address"] = peer_mac
    if group is not None:
        kw["group"] = group
    what = f"creating veth {name}"
    if mtu:
        kw["mtu"] = mtu
        peer_spec["mtu"] = mtu
        what += f" with mtu {mtu}"
    if master is not None:
        kw["master"] = master
    _call(what, lambda: ipr.link("add", **kw), name=name)


def pin_port(ipr: Any, index: int, name: str, mac: str) -> None:
    """Bridge port ``name`` learns no MAC (a frame with another source, even one the
    bridge takes for itself, moves no entry to it), frames for ``mac`` go to it (a
    static entry; without one they would flood every port), and it is in hairpin mode:
    a bridge that passes bridged traffic through netfilter (br_netfilter) sends a
    connection to the environment's own published port, once DNATed, back out the port
    it came in (vbdecl.ops.nat, hairpin). Its flags then read as PORT_FLAGS."""
    _call(f"setting bridge port {name} up (no MAC learning, hairpin mode)",
          lambda: ipr.brport("set", index=index, learning=0, mode=1), name=name)
    _call(f"pinning {mac} to {name}",
          lambda: ipr.fdb("replace", ifindex=index, lladdr=mac, state=NUD_NOARP, flags=NTF_MASTER), name=name)


# The flags :func:`pin_port` sets, as :func:`port_flags` reads them
PORT_FLAGS = {"learning": False, "hairpin": True}


def port_flags(ipr: Any, index: int, name: str) -> dict[str, bool] | None:
    """The flags of bridge port ``name`` that :func:`pin_port` sets (None: no bridge
    port)."""
    msgs = _call(f"reading bridge port {name}", lambda: list(ipr.brport("show", index=index) or []), name=name)
    info = msgs[0].get_attr("IFLA_PROTINFO") if msgs else None
    if info is None:
        return None
    return {"learning": bool(info.get_attr("IFLA_BRPORT_LEARNING")), "hairpin": bool(info.get_attr("IFLA_BRPORT_MODE"))}


def link_delete(ipr: Any, index: int, name: str) -> bool:
    """Delete link ``index``; False if it was already gone."""
    try:
        ipr.link("del", index=index)
    except _netlink_error() as err:
        if getattr(err, "code", 0) in (errno.ENODEV, errno.ENOENT):
            return False
        raise translate(err, f"deleting interface {name}") from None
    return True


def link_up(ipr: Any, index: int, name: str, *, mtu: int | None = None) -> None:
    kw: dict[str, Any] = {"index": index, "state": "up"}
    what = f"bringing {name} up"
    if mtu:
        kw["mtu"] = mtu
        what += f" with mtu {mtu}"
    _call(what, lambda: ipr.link("set", **kw), name=name)


def link_down(ipr: Any, index: int, name: str) -> None:
    try:
        ipr.link("set", index=index, state="down")
    except _netlink_error() as err:
        if getattr(err, "code", 0) not in (errno.ENODEV, errno.ENOENT):
            raise translate(err, f"bringing {name} down") from None


def index_of(ipr: Any, name: str) -> int | None:
    found = _call(f"looking up {name}", lambda: ipr.link_lookup(ifname=name))
    return int(found[0]) if found else None


# --- addresses ------------------------------------------------------------------

def addresses(ipr: Any, *, index: int | None = None, family: int | None = None) -> list[tuple[str, int, int]]:
    """``(address, prefixlen, ifindex)`` of every address (filtered)."""
    kw: dict[str, Any] = {}
    if family is not None:
        kw["family"] = family
    out = []
    for msg in _call("listing addresses", lambda: ipr.get_addr(**kw)):
        if index is not None and msg["index"] != index:
            continue
        addr = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
        if addr:
            out.append((str(addr), int(msg["prefixlen"]), int(msg["index"])))
    return out


def address_add(ipr: Any, index: int, address: str, prefixlen: int, *, ifname: str,
                broadcast: str | None = None) -> None:
    kw: dict[str, Any] = {"index": index, "address": address, "prefixlen": prefixlen}
    if broadcast:
        kw["broadcast"] = broadcast
    if ":" in address:
        kw["flags"] = 0x80 | 0x02  # IFA_F_PERMANENT | IFA_F_NODAD: usable at once
    what = f"adding {address}/{prefixlen} to {ifname}"
    try:
        ipr.addr("add", **kw)
    except _netlink_error() as err:
        if getattr(err, "code", 0) == errno.EEXIST:
            raise ConflictError(f"address {address}/{prefixlen} is already on {ifname}",
                                hint="another environment or the host uses it; pick another address") from None
        raise translate(err, what) from None
    except (OSError, ValueError, TypeError, struct_error()) as err:
        raise SysError(f"{what}: not a valid address ({err})", errno=errno.EINVAL) from None


def neighbours_forget(ipr: Any, address: str) -> None:
    """Remove ``ipr``'s neighbour entries for ``address``: one left from an interface
    that had it before (a veth made again gets a new MAC) would send its traffic
    to the old MAC until the entry goes stale, seconds later."""
    family = AF_INET6 if ":" in address else AF_INET
    try:
        for msg in ipr.get_neighbours(family=family, dst=address):
            ipr.neigh("del", family=family, dst=address, ifindex=msg["ifindex"])
    except _netlink_error():
        pass        # gone meanwhile, or none: nothing to forget


def announce(ipr: Any, pid: int, ifname: str, index: int, *, v6: bool) -> None:
    """Have the kernel tell everyone on the link of ``ifname`` (link ``index`` of ``ipr``,
    in the network namespace of ``pid``) that its addresses of one family are at its
    MAC now: a gratuitous ARP, or an unsolicited neighbour advertisement with the
    override flag. The other namespaces on a bridge keep a neighbour entry with the
    MAC of the interface that had an address before (a veth made again, an address
    given to another environment) until it fails, 20-30 s later; the kernel announces
    addresses only when the link comes up with them or its MAC changes. So: its
    notify setting on (arp_notify, ndisc_notify), and its MAC set to itself, an
    address change event (the link's own neighbour table is flushed with it: entries
    learnt come back as it talks; one made permanent inside the environment is gone). Sending
    the ARP from a packet socket would cost a network-wide RCU grace period at its
    close (synchronize_net: 10-20 ms here)."""
    knob = f"/proc/sys/net/ipv6/conf/{ifname}/ndisc_notify" if v6 else f"/proc/sys/net/ipv4/conf/{ifname}/arp_notify"
    fd = open_netns(pid)
    try:
        with entered(fd):       # (/proc/sys/net is the opener's namespace's)
            sysctl_set(knob, "1")
    finally:
        os.close(fd)
    what = f"announcing the addresses of {ifname}"
    try:
        (msg,) = ipr.get_links(index)
        ipr.link("set", index=index, address=_attr(msg, "IFLA_ADDRESS"))
    except _netlink_error() as err:
        raise translate(err, what) from None


def conntrack_forget_udp(address: str, port: int) -> int:
    """Delete the host's connection-tracking entries of UDP flows NATed to ``address``
    port ``port`` (a published port's container end): how many went.

    A flow's entry keeps its NAT for as long as packets keep it alive (120 s after the
    last): a network review's client went on being sent to an address its
    environment had left, then to another environment given that address, which
    publishes nothing. UDP only, as docker does: finding them walks the kernel's whole
    table (~10 ms here), and a TCP connection sent elsewhere ends (a reset, no
    socket there) rather than carrying on. Nothing tracked (conntrack not loaded):
    nothing to forget."""
    import ipaddress

    from pyroute2 import Conntrack
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

    ip = ipaddress.ip_address(address)
    family = AF_INET6 if ip.version == 6 else AF_INET
    gone = 0
    try:
        ct = Conntrack(nfgen_family=family)
    except (_netlink_error(), OSError):
        return 0
    try:
        # the reply comes from the container end (filtered by the kernel where it can;
        # pyroute2 checks each entry again)
        reply = NFCTAttrTuple(family=family, saddr=str(ip), proto=17, sport=port)
        for entry in list(ct.dump_entries(tuple_reply=reply)):
            try:
                ct.entry("del", tuple_orig=entry.tuple_orig)
                gone += 1
            except _netlink_error():
                pass        # gone meanwhile
    except (_netlink_error(), OSError):
        pass
    finally:
        ct.close()
    return gone


def address_delete(ipr: Any, index: int, address: str, prefixlen: int) -> bool:
    try:
        ipr.addr("del", index=index, address=address, prefixlen=prefixlen)
    except _netlink_error() as err:
        if getattr(err, "code", 0) in (errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENOENT):
            return False
        raise translate(err, f"removing {address}/{prefixlen}") from None
    return True


# --- routes ---------------------------------------------------------------------

def routes(ipr: Any, family: int = AF_INET) -> list[tuple[str, str]]:
    """``(prefix, interface)`` of the main table's routes (default included as /0)."""
    names = {ln["index"]: ln["name"] for ln in links(ipr)}
    out = []
    for msg in _call("listing routes", lambda: ipr.get_routes(family=family, table=RT_TABLE_MAIN)):
        dst = msg.get_attr("RTA_DST") or ("0.0.0.0" if family == AF_INET else "::")
        oif = msg.get_attr("RTA_OIF")
        out.append((f"{dst}/{msg['dst_len']}", str(names.get(oif, oif))))
    return out


def is_local(ipr: Any, address: str) -> bool:
    """Whether packets to ``address`` are delivered to this host (``ipr``'s namespace):
    a ``local`` route of the local table covers it, as nftables' ``fib daddr type
    local`` decides (127.0.0.0/8 is local as a whole, not only 127.0.0.1)."""
    import ipaddress

    addr = ipaddress.ip_address(address)
    family = AF_INET6 if addr.version == 6 else AF_INET
    for msg in _call("listing local routes", lambda: ipr.get_routes(family=family, table=RT_TABLE_LOCAL)):
        if msg["type"] != RTN_LOCAL:
            continue
        dst = msg.get_attr("RTA_DST")
        if dst is not None and addr in ipaddress.ip_network(f"{dst}/{msg['dst_len']}", strict=False):
            return True
    return False


def default_route_interface(ipr: Any, family: int = AF_INET) -> str | None:
    """The interface of the main table's default route in ``ipr``'s namespace, or None."""
    for msg in _call("listing routes", lambda: ipr.get_routes(family=family, table=RT_TABLE_MAIN)):
        if msg["dst_len"] != 0:
            continue
        oif = msg.get_attr("RTA_OIF")
        if oif is None:
            mp = msg.get_attr("RTA_MULTIPATH")
            oif = mp[0]["oif"] if mp else None
        if oif is None:
            continue
        found = link_by_index(ipr, int(oif))
        return str(found["name"]) if found else None
    return None


def own_default_route_interface(path: str = "/proc/thread-self/net/route") -> str | None:
    """The interface of the IPv4 default route in the calling thread's network
    namespace (main table; the lowest metric wins, as in the kernel), from its
    /proc/net/route: a file read, where a netlink route dump through pyroute2
    costs ~1.5 ms more. OSError when /proc is not there."""
    best: tuple[int, str] | None = None
    with open(path) as f:
        next(f, None)                                   # the header
        for line in f:
            fields = line.split()
            if len(fields) < 8 or fields[1] != "00000000" or fields[7] != "00000000":
                continue
            if fields[0] == "*" or int(fields[3], 16) & 0x0200:   # no device; RTF_REJECT
                continue                # unreachable, prohibit, blackhole: no way out
            metric = int(fields[6]) & 0xFFFFFFFF       # printed signed, kept unsigned
            if best is None or metric < best[0]:
                best = (metric, fields[0])
    return best[1] if best else None


def default_route_add(ipr: Any, gateway: str, index: int, *, ifname: str) -> None:
    family = AF_INET6 if ":" in gateway else AF_INET
    dst = "::/0" if family == AF_INET6 else "0.0.0.0/0"
    try:
        ipr.route("add", dst=dst, gateway=gateway, oif=index, family=family)
    except _netlink_error() as err:
        if getattr(err, "code", 0) == errno.EEXIST:
            raise ConflictError(f"a default route already exists in the environment ({ifname})",
                                hint="the environment's network namespace was not fresh") from None
        raise translate(err, f"adding the default route via {gateway} on {ifname}") from None


def default_route_delete(ipr: Any, gateway: str, index: int) -> bool:
    family = AF_INET6 if ":" in gateway else AF_INET
    dst = "::/0" if family == AF_INET6 else "0.0.0.0/0"
    try:
        ipr.route("del", dst=dst, gateway=gateway, oif=index, family=family)
    except _netlink_error() as err:
        if getattr(err, "code", 0) in (errno.ESRCH, errno.ENODEV, errno.ENOENT):
            return False
        raise translate(err, f"removing the default route via {gateway}") from None
    return True


# --- sysctls --------------------------------------------------------------------

FORWARD = {"4": "/proc/sys/net/ipv4/ip_forward", "6": "/proc/sys/net/ipv6/conf/all/forwarding"}


def sysctl_get(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as err:
        raise SysError(f"reading {path}: {err.strerror}", errno=err.errno or 0) from None


def sysctl_set(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except PermissionError as err:
        raise SysError(f"writing {path}: needs CAP_NET_ADMIN: run as root",
                       errno=err.errno or 0, hint=_ROOT_HINT) from None
    except OSError as err:
        raise SysError(f"writing {path}: {err.strerror}", errno=err.errno or 0) from None

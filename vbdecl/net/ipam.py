"""Address management, pure: gateways, broadcasts, deterministic allocation.

Nothing here touches the kernel or the disk; the ops gather what is taken
(leases of other environments, addresses already on the host) and ask this
module for an address. Allocation is deterministic: the first candidate is
a hash of the instance id, then a linear probe with wrap-around, so the
same instance asks for the same address and collisions resolve the same way
every time.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from vbdecl.errors import ConflictError, VbdeclError
from vbdecl.model import names

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

class ExhaustedError(ConflictError):
    """No free address is left in a subnet."""


def parse_subnet(text: str) -> Network:
    """The network ``text`` names; host bits set are an error (``10.88.0.5/24``)."""
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as err:
        raise VbdeclError(f"invalid subnet {text!r}: {err}",
                          hint="write the network address, e.g. 10.88.0.0/24") from None


def check_ifname(name: str, what: str = "interface") -> str:
    """``name`` if it is a valid Linux interface name (for ``what`` "bridge": one
    that cannot collide with vbdecl's address claims), else a clear error."""
    if problem := names.ifname_problem(name, what):
        raise VbdeclError(problem[0], hint=problem[1])
    return name


def veth_name(instance: str) -> str:
    """Host end of the environment's veth: the instance id without dashes, plus 'h'."""
    return check_ifname(instance.replace("-", "") + "h", "veth")


def gateway(net: Network) -> Address:
    """The first host of the subnet: the bridge's address and the default route."""
    if net.num_addresses < 4 and net.version == 4:
        raise VbdeclError(f"subnet {net} is too small: it needs a gateway and at least one environment",
                          hint="use a prefix of /30 or shorter, e.g. /24")
    if net.version == 6 and net.prefixlen > 126:
        raise VbdeclError(f"subnet {net} is too small", hint="use a /64")
    return net.network_address + 1


def broadcast4(address: str, prefixlen: int) -> str | None:
    """The IPv4 broadcast of ``address/prefixlen``, computed on the 32-bit
    network-order value; None for /31 and /32 (RFC 3021: no broadcast)."""
    if not 0 <= prefixlen <= 32:
        raise ValueError(f"IPv4 prefix length {prefixlen} out of range")
    if prefixlen >= 31:
        return None
    packed = ipaddress.IPv4Address(address).packed       # network byte order
    value = int.from_bytes(packed, "big")
    host_mask = (1 << (32 - prefixlen)) - 1
    return str(ipaddress.IPv4Address(((value | host_mask) & 0xFFFFFFFF).to_bytes(4, "big")))


def usable(net: Network) -> tuple[int, int]:
    """First and last host number (offsets from the network address) an
    environment may get: the gateway (offset 1), the network address and
    the IPv4 broadcast are never handed out. IPv6 ranges are capped at 2**32."""
    first = 2
    if net.version == 4:
        last = net.num_addresses - 2
    else:
        last = min(net.num_addresses - 1, 2**32)
    return first, last


def _start(instance: str, size: int) -> int:
    import hashlib  # lazily: OpenSSL's initialisation costs milliseconds on the run path

    digest = hashlib.sha256(instance.encode()).digest()
    return int.from_bytes(digest[:8], "big") % size


def allocate(net: Network, instance: str, taken: Iterable[str]) -> Address:
    """A free address for ``instance``: hash, then probe; deterministic."""
    first, last = usable(net)
    size = last - first + 1
    if size <= 0:
        raise ExhaustedError(f"subnet {net} has no address for an environment",
                             hint="use a larger subnet")
    base = int(net.network_address)
    used = set()
    for text in taken:
        addr = ipaddress.ip_address(text)
        if addr.version == net.version and addr in net:
            used.add(int(addr) - base)
    free = size - sum(1 for off in used if first <= off <= last)
    if free <= 0:
        raise ExhaustedError(
            f"subnet {net} is exhausted: all {size} addresses are in use",
            hint="destroy environments you no longer need, or use a larger subnet")
    offset = _start(instance, size)
    for step in range(size):
        candidate = first + (offset + step) % size
        if candidate not in used:
            return net.network_address + candidate
    raise ExhaustedError(f"subnet {net} is exhausted")  # unreachable: free > 0


def check_explicit(net: Network, text: str, taken: dict[str, str], instance: str) -> Address:
    """Validate an explicit address: inside the subnet, not reserved, not taken."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise VbdeclError(f"invalid address {text!r}") from None
    if addr.version != net.version or addr not in net:
        raise VbdeclError(f"address {addr} is not in subnet {net}",
                          hint=f"pick an address in {net}, or use auto")
    first, last = usable(net)
    offset = int(addr) - int(net.network_address)
    if not first <= offset <= last:
        what = "the gateway" if offset == 1 else "reserved (network or broadcast address)"
        raise VbdeclError(f"address {addr} is {what} of {net}",
                          hint=f"environments get {net.network_address + first} and up")
    holder = taken.get(str(addr))
    if holder is not None and holder != instance:
        raise ConflictError(f"address {addr} is already in use by {holder}",
                            hint="pick another address, or use auto")
    return addr


def overlapping_route(net: Network, routes: Iterable[tuple[str, str]], own: str) -> tuple[str, str] | None:
    """The first ``(prefix, interface)`` route that overlaps ``net`` on an
    interface other than ``own`` (the bridge); default routes do not count."""
    for prefix, dev in routes:
        if dev == own:
            continue
        try:
            other = ipaddress.ip_network(prefix, strict=False)
        except ValueError:
            continue
        if other.version != net.version or other.prefixlen == 0:
            continue
        if net.overlaps(other):
            return prefix, dev
    return None

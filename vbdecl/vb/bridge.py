"""The subnet of ``vb --net-bridge NAME`` (vb has no option for one), and the hint
for a network error vb cannot solve on its own.

A bridge vbdecl already serves keeps its subnet: the one the shared network
state of this state root records for it (what an apply or a run would compare
with, :mod:`vbdecl.ops.net`), else, for a bridge vbdecl made (ifalias
``vbdecl``, from any state root), the network of its gateway address. Any
other name gets :data:`DEFAULT_SUBNET`. Cheap: no netlink library, only when
--net-bridge is given.
"""

from __future__ import annotations

from typing import Any

DEFAULT_SUBNET = "10.88.0.0/24"
VBDECL_ALIAS = "vbdecl"     # the ifalias vbdecl gives the bridges it makes (ops.net.BRIDGE_ALIAS)


def _served(name: str) -> str | None:
    """The subnet this state root's shared network state records for bridge ``name``."""
    from vbdecl.net import shared

    try:
        entry = (shared.read("").get("bridges") or {}).get(name) or {}
    except (OSError, ValueError):
        return None
    subnet = entry.get("subnet") if isinstance(entry, dict) else None
    return subnet if isinstance(subnet, str) else None


def subnet_for(name: str) -> str:
    """The IPv4 subnet vb asks for on bridge ``name``."""
    from vbdecl.sys import netdev

    served = _served(name)
    if served is not None:
        return served
    if netdev.is_bridge(name) and netdev.alias(name) == VBDECL_ALIAS:
        found = netdev.ipv4_network(name)
        if found is not None:
            return found
    return DEFAULT_SUBNET


def hint(name: str, subnet: str, error: Any) -> str | None:
    """What to do about a failed ``--net-bridge NAME`` (vb's subnet ``subnet``): the
    network errors whose usual hint names manifest keys vb has no option for."""
    text = str(getattr(error, "message", error))
    where = str(getattr(error, "action", None) or getattr(error, "where", None) or "")
    if "CAP_NET_ADMIN" in text or (where.startswith(("net.", "nat.")) and "Operation not permitted" in text):
        # (an unprivileged review was sent to subnets and manifests; another, on a bridge
        # that was there, at the veth, got no hint)
        return ("bridge networking needs root (CAP_NET_ADMIN on the host): run vb as root, or leave "
                "--net-bridge out (--unshare-net gives a network of the sandbox's own)")
    if not (where.startswith("net.bridge") or "bridge" in text or "subnet" in text):
        return None
    from vbdecl.sys import netdev

    if netdev.exists(name) and not netdev.is_bridge(name):
        return f"{name} is no bridge: give --net-bridge the name of a bridge, or a new name"
    if netdev.is_bridge(name) and netdev.alias(name) != VBDECL_ALIAS:
        why = (f"bridge {name} was not made by vbdecl (its ifalias is not \"{VBDECL_ALIAS}\"), so vb "
               f"puts its own subnet {subnet} on it")
    else:
        why = (f"vb gives a new bridge the subnet {subnet} (a bridge vbdecl made keeps its "
               "own)")
    return (f"{why}; vb has no option for another subnet: name a bridge vbdecl made, or "
            "write a manifest (vbdecl convert --from-bwrap -- ARGS > env.yaml), set "
            "network.subnet there, and use vbdecl run env.yaml")

"""The start of the manifests integration tests write: a fresh root with the
host's /usr read-only and the usual /bin, /lib and /lib64 links into it."""

from __future__ import annotations

BASE_ENTRIES = (
    "type: ro-bind, source: /usr, target: /usr",
    "type: symlink, target: /bin, points_to: usr/bin",
    "type: symlink, target: /lib, points_to: usr/lib",
    "type: symlink, target: /lib64, points_to: usr/lib64",
)


def head(name: str, *, hostname: str | None = None, template: bool = True) -> str:
    """``apiVersion`` down to the base filesystem entries of a manifest for ``name``;
    more entries and the other spec keys follow. With ``template`` the text goes
    on into a ``str.format`` template, so its own braces are doubled (and ``name``
    may be ``"{name}"``)."""
    o, c = ("{{", "}}") if template else ("{", "}")
    lines = ["apiVersion: vbdecl/v1", "kind: Environment", "metadata:", f"  name: {name}", "spec:"]
    if hostname:
        lines.append(f"  hostname: {hostname}")
    lines.append("  filesystem:")
    lines += [f"    - {o}{entry}{c}" for entry in BASE_ENTRIES]
    return "\n".join(lines) + "\n"


def bridged(name: str, network: str = "", *, nat: bool = False) -> str:
    """A ``str.format`` template: :func:`head` for ``name``, /proc and /dev, and
    bridge networking on ``{bridge}`` and ``{subnet}`` with ``nat``; ``network``
    holds more lines of the network mapping (indented by 4). The spec goes on
    with ``  process:`` and the like."""
    return head(name) + (
        "    - {{type: proc, target: /proc}}\n"
        "    - {{type: dev, target: /dev}}\n"
        "  network:\n"
        "    mode: bridge\n"
        "    bridge: {bridge}\n"
        "    subnet: {subnet}\n"
        f"    nat: {'true' if nat else 'false'}\n") + network

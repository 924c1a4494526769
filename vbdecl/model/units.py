"""Pure parsers for the manifest's small languages: sizes, modes, ports.

No pydantic here: the ``vb`` front end and the run path use these on the
fast path. Every parser raises :class:`UnitError` (a ``ValueError``) whose
``hint`` says how to write the value correctly.
"""

from __future__ import annotations

import re

__all__ = [
    "UnitError",
    "bare_mode_error",
    "format_size",
    "parse_mode",
    "parse_port",
    "parse_size",
]


class UnitError(ValueError):
    """A value in one of the manifest's small languages is malformed."""

    def __init__(self, message: str, hint: str | None = None, suggestion: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.suggestion = suggestion    # what was probably meant ("64M"), for vb's one-line errors


_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "B": 1,
    "k": 1000, "kB": 1000,
    "M": 1000**2, "MB": 1000**2,
    "G": 1000**3, "GB": 1000**3,
    "T": 1000**4, "TB": 1000**4,
    "Ki": 1024, "KiB": 1024,
    "Mi": 1024**2, "MiB": 1024**2,
    "Gi": 1024**3, "GiB": 1024**3,
    "Ti": 1024**4, "TiB": 1024**4,
}
_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*")
SIZE_HINT = "write a size as bytes (1048576) or with a unit: Ki Mi Gi Ti (1024) or k M G T (1000), e.g. 64Mi"
MAX_SIZE = 2**63 - 1


def parse_size(value: str | int) -> int:
    """Bytes from ``512``, ``"512"``, ``"64Mi"``, ``"1.5G"``. Ki/Mi/Gi/Ti are 1024-based, k/M/G/T 1000-based."""
    if isinstance(value, bool):
        raise UnitError(f"expected a size, got {value!r}", SIZE_HINT)
    if isinstance(value, int):
        if value < 0:
            raise UnitError(f"a size cannot be negative: {value}", SIZE_HINT)
        if value > MAX_SIZE:
            raise UnitError(f"size {value} is too large", SIZE_HINT)
        return value
    if not isinstance(value, str):
        raise UnitError(f"expected a size, got {type(value).__name__} {value!r}", SIZE_HINT)
    m = _SIZE_RE.fullmatch(value)
    if not m:
        raise UnitError(f"invalid size {value!r}", SIZE_HINT)
    number, unit = m.groups()
    factor = _SIZE_UNITS.get(unit)
    if factor is None:
        if unit in ("K", "KB"):     # (1000 or 1024? k8s refuses it too)
            raise UnitError(f"size unit {unit!r} in {value!r} is ambiguous",
                            f"write {number}Ki for {number} x 1024 bytes, or {number}k for {number} x 1000")
        close = [u for u in ("Ki", "Mi", "Gi", "Ti", "k", "M", "G", "T") if u.lower() == unit.lower()
                 or u.lower() == unit.lower().rstrip("b")]
        meant = f"{number}{close[0]}" if close else None
        hint = f"did you mean {meant}? " if meant else ""
        raise UnitError(f"unknown size unit {unit!r} in {value!r}", hint + SIZE_HINT, meant)
    if "." in number:
        size = int(float(number) * factor)
        if factor == 1 and float(number) != int(float(number)):
            raise UnitError(f"a size in bytes must be a whole number: {value!r}", SIZE_HINT)
    else:
        size = int(number) * factor
    if size > MAX_SIZE:
        raise UnitError(f"size {value!r} is too large", SIZE_HINT)
    return size


def format_size(size: int) -> str:
    """``67108864`` -> ``"64Mi"``; exact, for messages and plan text."""
    for unit, factor in (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


_MODE_RE = re.compile(r"(?:0o)?([0-7]{1,4})")
MODE_HINT = 'write a mode as a quoted string of octal digits, e.g. mode: "0755"'


def bare_mode_error(value: int, written: str | None = None) -> UnitError:
    """The error for a mode given as the YAML integer ``value``; ``written``: its text in
    the file, when known (``0o644``, which is the number 420)."""
    return UnitError(f"mode {written or value} is a number, not a quoted octal string",
                     _bare_mode_hint(value, written))


def _bare_mode_hint(value: int, written: str | None = None) -> str:
    """What to write instead of the YAML integer ``value``: never a mode parse_mode refuses."""
    if written is not None and written.startswith("0o") and 0 <= value <= 0o7777:
        # YAML 1.2 octal: the number is the mode, whatever its decimal digits look like
        return f'quote it: mode: "{value:04o}" (YAML reads {written} as the number {value}, not as a mode)'
    digits = str(value)
    if value >= 0 and len(digits) <= 4 and set(digits) <= set("01234567"):
        # 755 or 0755 in the file: the author meant those octal digits
        return f'quote it: mode: "{value:04d}" (YAML reads a bare {value:04d} as the decimal number {value})'
    if 0 <= value <= 0o7777:
        # 0o755 (YAML 1.2 octal) or 493 in the file: the number is the mode
        return f'quote it: mode: "{value:04o}" (YAML read the number {value}, which is mode {value:04o} in octal)'
    return MODE_HINT


def parse_mode(value: str) -> int:
    """``"0755"``, ``"755"``, ``"1777"``, ``"0o755"`` -> int. A bare int is refused (YAML reads 0755 as 755)."""
    if isinstance(value, bool) or not isinstance(value, str):
        if isinstance(value, int) and not isinstance(value, bool):
            raise bare_mode_error(value)
        raise UnitError(f"expected a mode, got {type(value).__name__} {value!r}", MODE_HINT)
    m = _MODE_RE.fullmatch(value.strip())
    if not m:
        raise UnitError(f"invalid mode {value!r}: expected 1 to 4 octal digits (0-7)", MODE_HINT)
    return int(m.group(1), 8)


_PROTOCOLS = ("tcp", "udp")
PORT_HINT = 'write a port as "HOST:CONTAINER[/tcp|udp]", "IP:HOST:CONTAINER[/proto]" or {host: 8080, container: 80, protocol: tcp}'


def parse_port_number(value: str | int, what: str = "port") -> int:
    if isinstance(value, bool):
        raise UnitError(f"invalid {what} {value!r}", PORT_HINT)
    if isinstance(value, str):
        if not value.isdigit():
            raise UnitError(f"invalid {what} {value!r}: expected a number 1-65535", PORT_HINT)
        value = int(value)
    if not isinstance(value, int):
        raise UnitError(f"invalid {what} {value!r}: expected a number 1-65535", PORT_HINT)
    if not 1 <= value <= 65535:
        raise UnitError(f"{what} {value} is out of range 1-65535", PORT_HINT)
    return value


def parse_port(spec: str) -> dict[str, object]:
    """``"8080:80/tcp"``, ``"127.0.0.1:8080:80"``, ``"[::1]:8080:80/udp"``, ``"80"`` ->
    ``{"host", "container", "protocol", "host_ip"}``."""
    if not isinstance(spec, str):
        raise UnitError(f"expected a port spec, got {type(spec).__name__} {spec!r}", PORT_HINT)
    text = spec.strip()
    protocol = "tcp"
    if "/" in text:
        text, protocol = text.rsplit("/", 1)
        protocol = protocol.lower()
        if protocol not in _PROTOCOLS:
            raise UnitError(f"unknown protocol {protocol!r} in port {spec!r}", "use tcp or udp")
    host_ip: str | None = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1: end + 2] != ":":
            raise UnitError(f"invalid port {spec!r}", PORT_HINT)
        host_ip, text = text[1:end], text[end + 2:]
    parts = text.split(":")
    if len(parts) == 3 and host_ip is None:
        host_ip, host, container = parts
    elif len(parts) == 2:
        host, container = parts
    elif len(parts) == 1 and host_ip is None:
        host = container = parts[0]
    else:
        raise UnitError(f"invalid port {spec!r}", PORT_HINT)
    if host_ip is not None:
        import ipaddress

        try:
            ipaddress.ip_address(host_ip)
        except ValueError:
            raise UnitError(f"invalid host address {host_ip!r} in port {spec!r}", PORT_HINT) from None
    return {
        "host": parse_port_number(host, "host port"),
        "container": parse_port_number(container, "container port"),
        "protocol": protocol,
        "host_ip": host_ip,
    }

"""nftables through libnftables' JSON API (Debian's python3-nftables binding).

The binding is a system package, not on PyPI, so it is loaded at the point
of use from ``/usr/lib/python3/dist-packages/nftables`` (that package only,
never the rest of dist-packages). Each :func:`run` is ONE nftables
transaction: the whole batch lands or none of it does. No process per rule.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import sys
from typing import Any

from vbdecl.errors import ConflictError, SysError

SYSTEM_PATHS = ("/usr/lib/python3/dist-packages/nftables", "/usr/lib/python3/site-packages/nftables")
_INSTALL_HINT = "install the nftables Python binding: apt-get install python3-nftables"


def _module() -> Any:
    mod = sys.modules.get("nftables")
    if mod is not None and hasattr(mod, "Nftables"):
        return mod
    for base in SYSTEM_PATHS:
        init = os.path.join(base, "__init__.py")
        if not os.path.exists(init):
            continue
        spec = importlib.util.spec_from_file_location("nftables", init, submodule_search_locations=[base])
        if spec is None or spec.loader is None:
            continue
        mod = importlib.util.module_from_spec(spec)
        sys.modules["nftables"] = mod
        try:
            spec.loader.exec_module(mod)
        except Exception as err:
            sys.modules.pop("nftables", None)
            raise SysError(f"cannot load the nftables binding from {base}: {err}", hint=_INSTALL_HINT) from err
        return mod
    raise SysError("the nftables Python binding (libnftables) is not installed; NAT, published ports and "
                   "bridge networking (its guard, net.guard) need it",
                   hint=_INSTALL_HINT)


class Nft:
    """One libnftables context (it holds a netlink socket: close it)."""

    def __init__(self) -> None:
        mod = _module()
        try:
            self._nft = mod.Nftables()
        except OSError as err:
            raise SysError(f"cannot load libnftables: {err}", hint="apt-get install libnftables1") from err
        self._nft.set_json_output(True)
        self._nft.set_handle_output(False)

    def run(self, commands: list[dict[str, Any]], *, what: str) -> None:
        """Run ``commands`` as one transaction; translated errors on failure."""
        if not commands:
            return
        rc, _out, err = self._nft.json_cmd({"nftables": commands})
        if rc != 0:
            raise translate(err, what)

    def try_run(self, commands: list[dict[str, Any]]) -> tuple[bool, str]:
        """Run as one transaction; (ok, error text) instead of raising."""
        rc, _out, err = self._nft.json_cmd({"nftables": commands})
        return rc == 0, err or ""

    def list_table(self, family: str, name: str) -> list[dict[str, Any]] | None:
        """The objects of table ``family name`` as JSON dicts, or None if absent."""
        rc, out, err = self._nft.cmd(f"list table {family} {name}")
        if rc != 0:
            if "No such file or directory" in (err or ""):
                return None
            raise translate(err, f"listing table {family} {name}")
        data = json.loads(out or "{}")
        items: list[dict[str, Any]] = data.get("nftables", [])
        return items

    def close(self) -> None:
        # The binding frees its context (and closes its socket) in __del__,
        # which runs once the last reference goes: never call it twice.
        self._nft = None


def translate(err_text: str | None, what: str) -> Exception:
    text = (err_text or "").strip()
    first = text.splitlines()[0] if text else "unknown error"
    if "Operation not permitted" in text or "Permission denied" in text:
        return SysError(f"{what}: needs CAP_NET_ADMIN: run as root", errno=errno.EPERM,
                        hint="run vbdecl as root (sudo), or turn off nat and ports")
    if "File exists" in text:
        return ConflictError(f"{what}: already exists: {first}",
                             hint="another environment holds it; `vbdecl ls` shows which")
    if "No such file or directory" in text:
        return SysError(f"{what}: not found: {first}", errno=errno.ENOENT)
    if "Could not process rule" in text and "not supported" in text.lower():
        return SysError(f"{what}: the kernel lacks an nftables feature: {first}", errno=errno.EOPNOTSUPP,
                        hint="load the nf_tables, nft_nat, nft_fib and nft_masq modules")
    return SysError(f"{what}: {first}", hint=text if text != first else None)


def session(extra: dict[str, Any]) -> Nft:
    """The libnftables context cached in a Context's ``extra``."""
    nft = extra.get("nft")
    if not isinstance(nft, Nft):
        nft = Nft()
        extra["nft"] = nft
    return nft


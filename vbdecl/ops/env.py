"""Op ``env.namespaces`` (action id ``env``): a live environment's namespaces.

apply: starts vbdecl's init holding new namespaces (pid 1 of the new pid
namespace), writes the id maps, pins each namespace as a bind mount of
``/proc/PID/ns/*`` under ``<runtime>/<instance>/ns/`` and returns a record
``{"pid", "start_time", "pins", "ns", "runtime_dir", ...}``. The executor
should set ``ctx.env_pid`` from ``record["pid"]`` for the actions after it.
revert: kills the init (and with it everything in its pid namespace),
unpins, removes the runtime directory. Idempotent.
"""

from __future__ import annotations

from typing import Any

from vbdecl.errors import ActionError, VbdeclError
from vbdecl.ops import register
from vbdecl.ops.base import Context, Params, Record

register("env.namespaces", "vbdecl.ops.env:Namespaces")


def _spec_for(ctx: Context, params: Params) -> dict[str, Any]:
    spec = dict(ctx.spec)
    spec["namespaces"] = params.get("namespaces", spec.get("namespaces"))
    spec["idmap"] = params.get("idmap", spec.get("idmap"))
    spec["hostname"] = params.get("hostname", spec.get("hostname"))
    spec.setdefault("process", {})
    spec.setdefault("status", {})
    return spec


class Namespaces:
    #: its preflight is about who runs vbdecl, not about the plan: plan warns of it
    preflight_is_the_callers = True

    def describe(self, params: Params) -> str:
        nsd = params.get("namespaces") or {}
        new = [k for k, v in nsd.items() if v is True]
        joined = [k for k, v in nsd.items() if isinstance(v, dict)]
        text = "namespaces: " + (", ".join(new) or "none")
        if joined:
            text += "; join " + ", ".join(joined)
        return text

    def preflight(self, params: Params) -> str | None:
        """A live environment's namespaces are kept by bind mounts of their files in our
        mount namespace (sys.ns.pin), and entered by helpers: that takes CAP_SYS_ADMIN in
        the host's user namespace, over our mounts (the host's root, also in mounts a
        child user namespace owns). An unprivileged apply failed at its first step, and a
        second error hid why; root of its own user namespace (`unshare -rm`) got half-way,
        to a setns EPERM (reviews)."""
        from vbdecl.model.names import CAPABILITIES
        from vbdecl.sys.caps import capget, in_initial_user_ns
        from vbdecl.sys.ns import mounts_are_ours

        if capget()[0] >> CAPABILITIES["SYS_ADMIN"] & 1 and in_initial_user_ns() and mounts_are_ours():
            return None
        return ("a live environment needs root (CAP_SYS_ADMIN over this mount namespace): apply "
                "keeps its namespaces by bind-mounting them here; run it as root, or use vbdecl run "
                "FILE, which needs no privilege")

    def probe(self, ctx: Context, params: Params, record: Record | None) -> Record | None:
        from vbdecl.runtime.live import env_alive, find_env, hostname_of

        if record is None:
            # Recovery of an apply killed before its record was journaled.
            return find_env(ctx.instance, ctx.runtime_dir)
        if not env_alive(record):
            return None
        if "hostname" not in record:
            return record
        # root inside may rename its environment (`hostname x`): drift, which the
        # in-place update repairs
        try:
            return {**record, "hostname": hostname_of(record)}
        except VbdeclError:
            return record if env_alive(record) else None

    def apply(self, ctx: Context, params: Params) -> Record:
        from vbdecl.runtime.live import start_env

        try:
            record = start_env(spec=_spec_for(ctx, params), instance=ctx.instance,
                               runtime_dir=ctx.runtime_dir, name=ctx.name)
        except VbdeclError as err:
            raise ActionError(err.message, action="env", hint=err.hint) from err
        ctx.env_pid = int(record["pid"])
        return _with_hostname(record, params)

    def revert(self, ctx: Context, record: Record) -> None:
        from vbdecl.runtime.live import stop_env

        stop_env(record)
        ctx.env_pid = None

    def update(self, ctx: Context, params: Params, record: Record) -> Record:
        """The hostname, in place (plan.diff: a change of anything else replaces the
        environment; a day-2 review saw a new hostname do so, its process and files lost)."""
        from vbdecl.runtime.live import set_hostname

        try:
            set_hostname(record, params.get("hostname"))
        except VbdeclError as err:
            raise ActionError(err.message, action="env", hint=err.hint) from err
        return _with_hostname(record, params)


def _with_hostname(record: Record, params: Params) -> Record:
    """``record`` with the hostname its own uts namespace was given, which probe compares
    with the one it has now; without one (the host's name, or the host's namespace)
    there is nothing of ours to compare."""
    out = {k: v for k, v in record.items() if k != "hostname"}
    hostname = params.get("hostname")
    if hostname is not None and (params.get("namespaces") or {}).get("uts") is True:
        out["hostname"] = hostname
    return out

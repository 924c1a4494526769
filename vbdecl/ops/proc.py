"""Op ``proc.main`` (action id ``process``): a live environment's declared process.

apply: enters the environment's namespaces and cgroup (through the ``env``
record in ``ctx.records``) and starts ``process.command`` (default
``/bin/sh``) with ids, rlimits and security applied, its output appended to
``<state>/envs/<name>/logs/process.log`` (``ctx.state_dir/logs``). A small
supervisor reaps it and writes how it ended to ``logs/process.exit``
(:func:`vbdecl.runtime.live.read_exit`), then stays while anything the process
started lives (a child subreaper: what the process leaves running is reparented
to it). Record: ``{"pid", "start_time", "log", "supervisor": {"pid", "start_time"}}``.
revert: ends the process's whole tree (the process and every process under the
supervisor, daemons included; never `vbdecl exec`'s commands nor the init):
SIGTERM, then SIGKILL after 5 s (:func:`vbdecl.runtime.live.stop_process`).
"""

from __future__ import annotations

import os
from typing import Any

from vbdecl.errors import ActionError, VbdeclError
from vbdecl.ops import register
from vbdecl.ops.base import Context, Params, Record

register("proc.main", "vbdecl.ops.proc:Main")


INHERIT_FDS_REFUSED = (
    "a live environment's process cannot inherit fds (apply, later applies and restarts "
    "start it, each with other fds): use vbdecl run FILE for a process that takes its "
    "caller's fds, or give the process what it needs as files (a bind of a socket's path)")


def _spec_for(ctx: Context, params: Params) -> dict[str, Any]:
    spec = dict(ctx.spec)
    if "process" in params:
        spec["process"] = params["process"]
    if "security" in params:
        spec["security"] = params["security"]
    limits = dict(spec.get("limits") or {})
    rl = params.get("limits.rlimits", params.get("rlimits"))
    if rl is not None:
        limits["rlimits"] = rl
    spec["limits"] = limits
    return spec


def _runtime_dir(ctx: Context) -> str:
    """The environment's runtime dir: the one its init was started with."""
    return str((ctx.records.get("env") or {}).get("runtime_dir") or ctx.runtime_dir)


class Main:
    def describe(self, params: Params) -> str:
        cmd = (params.get("process") or {}).get("command") or ["/bin/sh"]
        return "process: " + " ".join(cmd)

    def preflight(self, params: Params) -> str | None:
        """(Plan says the first at the manifest's key: cli.cmd_plan.check_live_rules.)
        A seccomp profile file that is not there (read when the process starts), or
        fds to inherit, which a live process cannot have: they are the numbers of fds
        of the command that starts it, and later applies, restarts and recover start it
        again with other fds at those numbers (a review: vbdecl's own lock and journal)."""
        fds = (params.get("process") or {}).get("inherit_fds")
        if fds:
            return f"process.inherit_fds {fds}: {INHERIT_FDS_REFUSED}"
        setting = (params.get("security") or {}).get("seccomp")
        profile = setting.get("profile") if isinstance(setting, dict) else None
        if not profile or "profile_text" in (setting or {}) or os.path.isfile(profile):
            return None     # (pinned: its text is in the plan, engine.sources.pin_file_sources)
        what = "is not a file" if os.path.exists(profile) else "does not exist"
        return (f"seccomp profile {profile} {what}: create it (OCI/Docker JSON), or change "
                "security.seccomp in the manifest")

    def probe(self, ctx: Context, params: Params, record: Record | None) -> Record | None:
        from vbdecl.sys.proc import alive

        if record is None:
            # Recovery of an apply that died in this step: the process named in the
            # environment's runtime dir (written as soon as it started).
            from vbdecl.runtime.live import find_process

            return find_process(_runtime_dir(ctx))
        if record and alive(int(record.get("pid") or 0), record.get("start_time")):
            return record
        return None

    def apply(self, ctx: Context, params: Params) -> Record:
        from vbdecl.runtime.live import find_process, memory_cgroups, start_process, stop_process
        from vbdecl.runtime.oom import memory_dir

        env = ctx.records.get("env")
        if not env:
            raise ActionError("the environment's namespaces are not there", action="process",
                              hint="the env action must be applied first")
        # What a process before this one left running, when no record holds it any
        # more: a revert killed in the middle of its stop (and its rollback, which found
        # the process gone and starts it again). No process may outlive its replacement.
        try:
            left = find_process(_runtime_dir(ctx))
            if left is not None:
                stop_process(left)
            # the v1 memory cgroup the init stays out of (ops.cgroup), which the process joins
            resources = {k: {"record": v} for k, v in ctx.records.items()}
            cgroups = memory_cgroups(resources, ctx.instance)
            return start_process(env_record=env, spec=_spec_for(ctx, params),
                                 log_path=os.path.join(ctx.state_dir, "logs", "process.log"),
                                 cgroups=cgroups, name=ctx.name,
                                 memory_dir=memory_dir(resources) or next(iter(cgroups), None))
        except VbdeclError as err:
            raise ActionError(err.message, action="process", hint=err.hint) from err

    def revert(self, ctx: Context, record: Record) -> None:
        from vbdecl.runtime.live import forget_process, stop_process

        try:
            stop_process(record)
        except VbdeclError as err:
            # (process.json stays: recovery and the next apply find what is left)
            raise ActionError(err.message, action="process", hint=err.hint) from err
        forget_process(_runtime_dir(ctx), record)

    def update(self, ctx: Context, params: Params, record: Record) -> Record:
        self.revert(ctx, record)
        return self.apply(ctx, params)

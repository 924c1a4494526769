"""A minimal transactional executor for the host actions of an ephemeral run.

``vbdecl run`` executes the plan's host-scope actions (cgroups, network,
NAT) in the vbdecl process once the sandbox's namespaces exist and before
the sandbox is released; on failure the landed ones are reverted in reverse
order and the original error is raised; at the end of the run everything
is reverted. The full executor with journal and state (vbdecl.engine) is
for ``apply``; an ephemeral run has no state to journal.

A crash of vbdecl (SIGKILL) must not leak host objects either: before the
first action, :class:`HostTransaction` forks a *janitor* that learns, over a
pipe, every action before its apply starts and every landed action with its
record. When the pipe ends without a final "done" (vbdecl died), the janitor
waits until the sandbox is gone (it may outlive vbdecl with
``die_with_parent: false``), then reverts newest first: what the probe of an
action caught in flight finds (probes report only objects of the instance),
then what landed.

Not run here: ``env`` and ``process`` (they are the run itself) and
``net.loopback`` (the sandbox brings ``lo`` up itself, without pyroute2).
Env-scope actions are executed by ``setup_root`` inside the sandbox.
"""

from __future__ import annotations

import json
import os
from typing import Any

from vbdecl.errors import ActionError, VbdeclError
from vbdecl.ops import let_go
from vbdecl.ops.base import Context
from vbdecl.runtime.janitor import dismiss, fork_janitor, read_lines, wait_gone


class HostTransaction:
    def __init__(self, ctx: Context, *, sandbox_pid: int | None = None) -> None:
        self.ctx = ctx
        self.landed: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self._faults: Any = None
        self._janitor_fd = -1
        self._janitor_pid = 0
        self._mark_fd = -1          # the run's mark (runtime/runmarks.py), when it makes a cgroup
        self._failed = False        # a revert failed: the janitor tries it again
        self.failed_records: dict[str, Any] = {}    # what those reverts were to undo, by id
        self.sandbox_pid = sandbox_pid

    # --- janitor ------------------------------------------------------------------

    def _tell(self, msg: dict[str, Any]) -> None:
        if self._janitor_fd < 0:
            self._start_janitor()
        try:
            os.write(self._janitor_fd, (json.dumps(msg) + "\n").encode())
        except OSError:
            pass

    def _start_janitor(self) -> None:
        from vbdecl.sys import proc as sysproc

        started = sysproc.start_time(self.sandbox_pid) if self.sandbox_pid else None
        me = os.getpid()
        mark = self._mark_fd
        self._janitor_fd, self._janitor_pid = fork_janitor(
            "vbdecl-janitor", [mark] if mark >= 0 else [],
            lambda fd: _janitor(self.ctx, fd, self.sandbox_pid, started, me, mark))

    def _hold_mark(self, actions: list[dict[str, Any]]) -> None:
        """Mark the run before its first cgroup action (runtime/runmarks.py): if it and
        its janitor are both killed, a later sweep still finds its groups."""
        if self._mark_fd >= 0 or not any(a["kind"].startswith("cgroup") for a in actions):
            return
        from vbdecl.runtime import runmarks

        try:
            self._mark_fd = runmarks.hold(*_mark_place(self.ctx))
        except OSError:
            pass    # (a runtime root it cannot write: the run goes on, as it did before marks)

    def close(self) -> bool:
        """The run is over: dismiss the janitor, which reverts what it was not told is
        reverted (a revert that failed or was interrupted) once the sandbox is gone, and
        wait for it. True when it could not revert all of that: it is left on the host."""
        status: int | None = 0
        if self._janitor_fd >= 0:
            if not (self.landed or self._failed):     # (an interrupted revert left its action there)
                try:
                    os.write(self._janitor_fd, b'{"op": "done"}\n')
                except OSError:
                    pass
            status = dismiss(self._janitor_fd, self._janitor_pid)
            self._janitor_fd = -1
        if self._mark_fd >= 0:
            from vbdecl.runtime import runmarks

            root, instance = _mark_place(self.ctx)
            own = _own_root(self.ctx)
            runmarks.release(root, instance, self._mark_fd, done=status == 0, own_root=own)
            self._mark_fd = -1
            try:        # (the groups of runs killed with their janitors: not this run's news)
                runmarks.sweep(root, own_root=own)
            except Exception:
                pass
        return status != 0

    def _fault(self) -> Any:
        if self._faults is None:
            from vbdecl.engine.faults import Faults

            self._faults = Faults()
        return self._faults

    def apply(self, actions: list[dict[str, Any]]) -> None:
        from vbdecl.ops import op_for

        if actions and self._janitor_fd < 0:
            self._hold_mark(actions)
            self._start_janitor()       # before anything lands
        for action in actions:
            aid = action["id"]
            self._tell({"op": "intent", "action": action})
            try:
                self._fault().check_apply(aid)
                record = op_for(action["kind"]).apply(self.ctx, action["params"])
            except BaseException as exc:
                errors = self.revert()
                if isinstance(exc, ActionError):
                    exc.revert_errors.extend(errors)
                    raise
                hint = exc.hint if isinstance(exc, VbdeclError) else None
                message = exc.message if isinstance(exc, VbdeclError) else f"{type(exc).__name__}: {exc}"
                raise ActionError(message, action=aid, hint=hint, revert_errors=errors) from exc
            self._fault().check_crash_before_done(aid)   # test hook: die in flight
            self.landed.append((action, record))
            self.ctx.records[aid] = record
            self._tell({"op": "landed", "action": action, "record": record})
        let_go(self.ctx.instance)

    def revert(self) -> list[ActionError]:
        """Revert every landed action, newest first; return the revert failures. The
        janitor is not told of a failed revert, nor, after an interrupt
        (KeyboardInterrupt, SystemExit, which goes through), of the actions left: once
        :meth:`close` is called and the sandbox is gone it reverts them again."""
        from vbdecl.ops import op_for

        errors: list[ActionError] = []
        try:
            while self.landed:
                action, record = self.landed[-1]
                aid = action["id"]
                try:
                    self._fault().check_revert(aid)
                    op_for(action["kind"]).revert(self.ctx, record)
                    self._tell({"op": "reverted", "id": aid})
                except Exception as exc:
                    errors.append(exc if isinstance(exc, ActionError)
                                  else ActionError(f"{type(exc).__name__}: {exc}", action=aid))
                    self.failed_records[aid] = record
                self.landed.pop()
                self.ctx.records.pop(aid, None)
        finally:
            # (an interrupt too: the janitor's revert of the bridge would wait for this
            # process's hold, a review's run for 60 s, and fail)
            let_go(self.ctx.instance)
        self._failed = self._failed or bool(errors)
        return errors


def _mark_place(ctx: Context) -> tuple[str, str]:
    """The runtime root and the instance of the run's mark."""
    return os.path.dirname(ctx.runtime_dir), ctx.instance


def _own_root(ctx: Context) -> bool:
    """Whether the run's runtime root is vbdecl's to remove once empty."""
    from vbdecl.engine.paths import own_runtime_root

    return own_runtime_root(os.path.dirname(ctx.runtime_dir), ctx.state_dir or None)


def _janitor(ctx: Context, fd: int, sandbox_pid: int | None, started: int | None,
             vbdecl_pid: int, mark: int = -1) -> int:
    """Follow the transaction; if vbdecl (``vbdecl_pid``) dies before "done" (or leaves it
    out: a revert failed), revert what landed, then tidy the host-wide files of the
    families it touched (ops.tidy_shared), and remove the run's mark (fd ``mark``) when
    every revert landed. Its exit status: 1 when a revert failed."""
    from vbdecl.ops import op_for, tidy_shared

    os.environ.pop("VBDECL_TEST_CRASH_AT", None)    # (the test hook kills vbdecl, not its janitor)
    landed: list[tuple[dict[str, Any], dict[str, Any]]] = []
    in_flight: dict[str, Any] | None = None   # an action whose apply had started
    kinds: set[str] = set()                   # of every action begun
    for line in read_lines(fd):
        msg = json.loads(line)
        if msg["op"] == "intent":
            in_flight = msg["action"]
            kinds.add(in_flight["kind"])
        elif msg["op"] == "landed":
            landed.append((msg["action"], msg["record"]))
            in_flight = None
        elif msg["op"] == "reverted":
            landed = [x for x in landed if x[0]["id"] != msg["id"]]
        elif msg["op"] == "done":
            return 0
    wait_gone(sandbox_pid, started)     # vbdecl is gone; the sandbox may live on
    for action, record in reversed(landed):
        ctx.records[action["id"]] = record
    if in_flight is not None:
        # vbdecl died inside that apply: whatever of it landed is found by its probe
        # (which reports only objects of ctx.instance) and goes first.
        try:
            found = op_for(in_flight["kind"]).probe(ctx, in_flight["params"], None)
            if found is not None:
                landed.append((in_flight, found))
        except BaseException:
            pass
    failed = 0
    for action, record in reversed(landed):
        try:
            op_for(action["kind"]).revert(ctx, record)
        except BaseException:
            failed = 1
    if not failed:
        if mark >= 0:
            from vbdecl.runtime import runmarks

            try:
                runmarks.release(*_mark_place(ctx), mark, done=True, own_root=_own_root(ctx))
            except OSError:
                pass        # (a later sweep finds it)
        try:
            tidy_shared(ctx, kinds, writer=vbdecl_pid)
        except BaseException:
            pass        # (the next command of the family tidies them)
    return failed

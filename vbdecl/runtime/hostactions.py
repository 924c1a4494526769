"""A minimal transactional executor for the host actions of an ephemeral run.

``vbdecl run`` executes the plan's host-scope actions (cgroups, network,
NAT) in the vbdecl process once the sandbox's namespaces exist and before
the sandbox is released; on failure the landed ones are reverted in reverse
order and the original error is raised; at the end of the run everything
is reverted. The full executor with journal and state (vbdecl.engine) is
for ``apply``; an ephemeral run has no state to journal.

Not run here: ``env`` and ``process`` (they are the run itself) and
``net.loopback`` (the sandbox brings ``lo`` up itself, without pyroute2).
Env-scope actions are executed by ``setup_root`` inside the sandbox.
"""

from __future__ import annotations

from typing import Any

from vbdecl.errors import ActionError, VbdeclError
from vbdecl.ops.base import Context


class HostTransaction:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.landed: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self._faults: Any = None

    def _fault(self) -> Any:
        if self._faults is None:
            from vbdecl.engine.faults import Faults

            self._faults = Faults()
        return self._faults

    def apply(self, actions: list[dict[str, Any]]) -> None:
        from vbdecl.ops import op_for

        for action in actions:
            aid = action["id"]
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
            self.landed.append((action, record))
            self.ctx.records[aid] = record

    def revert(self) -> list[ActionError]:
        """Revert every landed action, newest first; return the revert failures."""
        from vbdecl.ops import op_for

        errors: list[ActionError] = []
        while self.landed:
            action, record = self.landed.pop()
            aid = action["id"]
            try:
                self._fault().check_revert(aid)
                op_for(action["kind"]).revert(self.ctx, record)
            except BaseException as exc:
                errors.append(exc if isinstance(exc, ActionError)
                              else ActionError(str(exc), action=aid))
            self.ctx.records.pop(aid, None)
        return errors

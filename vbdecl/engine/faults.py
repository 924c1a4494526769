"""``VBDECL_FAULT``: the test hook of MANIFEST.md.

``VBDECL_FAULT=<id>`` makes that action fail when it is applied;
``<id>:revert`` makes its revert fail; a comma-separated list combines them.
Inert unless set. The executor consults it for every step, so every op gets it.
"""

from __future__ import annotations

import os

from vbdecl.errors import ActionError


class Faults:
    def __init__(self, spec: str | None = None) -> None:
        spec = os.environ.get("VBDECL_FAULT", "") if spec is None else spec
        self.apply: set[str] = set()
        self.revert: set[str] = set()
        for item in (s.strip() for s in spec.split(",")):
            if not item:
                continue
            if item.endswith(":revert"):
                self.revert.add(item[: -len(":revert")])
            else:
                self.apply.add(item)

    def __bool__(self) -> bool:
        return bool(self.apply or self.revert)

    def check_apply(self, action_id: str) -> None:
        if action_id in self.apply:
            raise ActionError("injected fault (VBDECL_FAULT)", action=action_id,
                              hint="unset VBDECL_FAULT; it is a test hook")

    def check_revert(self, action_id: str) -> None:
        if action_id in self.revert:
            raise ActionError("injected revert fault (VBDECL_FAULT)", action=action_id,
                              hint="unset VBDECL_FAULT, then run vbdecl recover")

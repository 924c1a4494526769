"""Run a ``vb`` document through vbdecl's runtime with bubblewrap's outward behaviour.

bubblewrap's monitoring options are served from the runtime's events:
``--info-fd`` gets one JSON object when the child started and is closed,
``--json-status-fd`` gets the same object and, at the end, ``{"exit-code": N}``.
``--sync-fd`` stays open in this process (and nowhere else) until the sandbox
is gone; ``--block-fd`` is read before the sandbox starts. Failures of vb
itself exit with status 1, as bubblewrap's do.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

# bubblewrap's names for the namespace ids it reports.
_NS_KEYS = {"cgroup": "cgroup-namespace", "ipc": "ipc-namespace", "mnt": "mnt-namespace",
            "mount": "mnt-namespace", "net": "net-namespace", "pid": "pid-namespace",
            "uts": "uts-namespace", "user": "user-namespace"}


def _write(fd: int, obj: dict[str, Any]) -> None:
    data = (json.dumps(obj, indent=None) + "\n").encode()
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass


def _close(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def _block(fd: int) -> None:
    """Wait until FD has data (or EOF), as bubblewrap's --block-fd/--userns-block-fd."""
    try:
        os.read(fd, 1)
    except OSError:
        pass


class _StatusWriter:
    def __init__(self, info_fd: int | None, json_fd: int | None) -> None:
        self.info_fd = info_fd
        self.json_fd = json_fd

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "spawned":
            info: dict[str, Any] = {"child-pid": event.get("pid")}
            for key, value in (event.get("ns") or {}).items():
                name = _NS_KEYS.get(key)
                if name and value is not None:
                    info[name] = value
            if self.info_fd is not None:
                _write(self.info_fd, info)
                _close(self.info_fd)
                self.info_fd = None
            if self.json_fd is not None:
                _write(self.json_fd, info)
        elif kind == "exited" and self.json_fd is not None:
            _write(self.json_fd, {"exit-code": event.get("exit_code")})
            _close(self.json_fd)
            self.json_fd = None


def undo_locale_coercion() -> None:
    """Python (PEP 538) may have set LC_CTYPE in its own environment at start-up;
    the sandboxed program must see the caller's environment, not ours."""
    if "LC_CTYPE" not in os.environ:
        return
    try:
        with open("/proc/self/environ", "rb") as f:
            original = f.read().split(b"\0")
    except OSError:
        return
    if not any(item.startswith(b"LC_CTYPE=") for item in original):
        del os.environ["LC_CTYPE"]


def launch(doc: dict[str, Any], *, prog: str, level_prefix: bool) -> int:
    from vbdecl.errors import VbdeclError
    from vbdecl.plan.compile import compile_doc
    from vbdecl.runtime.spawn import run_plan

    undo_locale_coercion()
    spec = doc["spec"]
    vb = spec.get("vb") or {}
    prefix = "<3>" if level_prefix else ""
    for key in ("block_fd", "userns_block_fd"):
        if vb.get(key) is not None:
            _block(int(vb[key]))
    for extra in vb.get("lock_files", [])[1:]:
        # The runtime holds status.lock_file; further --lock-file paths are held here.
        from vbdecl.runtime.lock import acquire

        try:
            acquire(extra)
        except VbdeclError as err:
            print(f"{prefix}{prog}: {err.message}", file=sys.stderr)
            return 1
    writer = _StatusWriter(vb.get("info_fd"), vb.get("json_status_fd"))
    try:
        plan = compile_doc(doc)
    except VbdeclError as err:
        print(f"{prefix}{prog}: {err.message}", file=sys.stderr)
        return 1
    result = run_plan(plan, on_event=writer, forward_signals=True)
    _close(writer.info_fd)
    _close(writer.json_fd)
    if result.error is not None:
        message = getattr(result.error, "message", str(result.error))
        print(f"{prefix}{prog}: {message}", file=sys.stderr)
        return 1
    return int(result.code)

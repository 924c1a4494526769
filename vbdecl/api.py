"""The Python API for embedders.

    import vbdecl

    result = vbdecl.run("manifests/hello.yaml", on_event=print)
    print(result.code)

    vbdecl.apply("manifests/service.yaml", state_dir="/tmp/state")
    code = vbdecl.api.exec_in("service", ["ps", "-ef"], state_dir="/tmp/state")
    vbdecl.destroy("service", state_dir="/tmp/state")

Everything is imported lazily: ``import vbdecl`` costs nothing, ``run`` of
a cached manifest never imports pydantic, ruamel or rich.

Events (``on_event``) are dicts: ``{"event": "runtime_init_warnings" |
"spawned" | "setup_finished" | "exited", "ts": unix time, ...}`` for a run
(``spawned``/``setup_finished``/``exited`` carry ``pid`` and ``ns``, the
namespace inode numbers; ``exited`` the ``exit_code``), and the engine's
progress events for ``apply``/``destroy``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]
EventCallback = Callable[[Event], None]

__all__ = ["apply", "compile_plan", "destroy", "exec_in", "load", "run"]


def load(path: str | os.PathLike[str], *, use_cache: bool = True) -> list[dict[str, Any]]:
    """The compiled plans (docs/plan-format.md) of every environment in a manifest file."""
    from vbdecl.engine.plancache import plans_for_file

    return plans_for_file(os.fspath(path), use_cache=use_cache)


def compile_plan(path: str | os.PathLike[str], *, name: str | None = None,
                 use_cache: bool = True) -> dict[str, Any]:
    """The compiled plan of one environment of a manifest (``name`` picks one of several)."""
    from vbdecl.cli.fast import load_plan

    return load_plan(os.fspath(path), name=name, use_cache=use_cache)


def _plan_of(target: Any, name: str | None) -> dict[str, Any]:
    if isinstance(target, dict):
        if "spec" in target and "actions" in target:
            return target                         # a compiled plan
        if "process" in target and "namespaces" in target:
            return {"name": name or "sandbox", "spec": target, "actions": []}   # a normalized spec
        raise TypeError("run() takes a manifest path, a compiled plan or a normalized spec")
    return compile_plan(target, name=name)


def run(target: Any, *, command: list[str] | None = None, name: str | None = None,
        on_event: EventCallback | None = None, event_fds: list[int] | None = None,
        state_dir: str | None = None, forward_signals: bool = False) -> Any:
    """Run an environment ephemerally: set up, run its process, tear down.

    ``target``: a manifest path, a compiled plan, or a normalized spec.
    ``command`` replaces ``process.command``. Returns a
    :class:`vbdecl.runtime.spawn.RunResult` (``code``, ``error``, ``events``,
    ``instance``); setup failures do not raise, they are in ``error`` with
    ``code`` 125/126/127; failures of the teardown after the process ran are in
    ``teardown_errors``, with ``code`` the process's. ``forward_signals`` makes this thread block and
    forward SIGTERM, SIGINT, ... to the sandbox while it runs (only for the
    main thread of a program that owns its signals).
    """
    from vbdecl.runtime.spawn import run_plan

    plan = _plan_of(target, name)
    return run_plan(plan, argv=command, on_event=on_event, event_fds=event_fds,
                    forward_signals=forward_signals, state_dir=state_dir)


def apply(target: Any, *, name: str | None = None, state_dir: str | None = None,
          on_event: EventCallback | None = None) -> Any:
    """Create or update a live environment transactionally (``vbdecl apply``).

    Returns the engine's result; raises :class:`vbdecl.errors.VbdeclError`
    (after rolling back) on failure.
    """
    from vbdecl.engine.executor import Engine

    plan = target if isinstance(target, dict) else compile_plan(target, name=name)
    return Engine(state_dir, on_event=on_event).apply(plan)


def destroy(name: str, *, state_dir: str | None = None, on_event: EventCallback | None = None) -> Any:
    """Stop and remove a live environment (``vbdecl destroy NAME``)."""
    from vbdecl.engine.executor import Engine

    return Engine(state_dir, on_event=on_event).destroy(name)


def exec_in(name: str, command: list[str] | None = None, *, state_dir: str | None = None,
            cwd: str | None = None) -> int:
    """Run ``command`` inside the live environment ``name``; return its exit status.

    The command runs in a forked child that enters the environment (this
    process's own namespaces are not touched).
    """
    import json

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 125
        try:
            os.close(r)
            from vbdecl.runtime.live import exec_in as _exec

            code = _exec(name, command, state_dir=state_dir, cwd=cwd, forward_signals=False)
        except BaseException as exc:
            os.write(w, json.dumps({"message": getattr(exc, "message", str(exc)),
                                    "hint": getattr(exc, "hint", None)}).encode())
        os._exit(code)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if data:
        from vbdecl.errors import RuntimeSetupError

        info = json.loads(data)
        raise RuntimeSetupError(info["message"], hint=info.get("hint"))
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)

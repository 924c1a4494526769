"""Rendering of engine events and plans for the apply-family commands.

``--json``: every event is one JSON line on stdout. Otherwise people get
short lines on stderr (failures, reverts, recovery) and, on a terminal for
applies of more than a few actions, a rich progress bar (rich is imported
only then).
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

PROGRESS_MIN_STEPS = 8


def _id(ev: dict[str, Any]) -> str:
    """The event's action id as plan text shows it (one line: plan.fmt.action_id)."""
    from vbdecl.plan.fmt import action_id

    return action_id(str(ev["id"]))


class Renderer:
    def __init__(self, json_mode: bool = False, stream: TextIO | None = None) -> None:
        self.json = json_mode
        self.stream = stream or sys.stderr
        self.progress: Any = None
        self.task: Any = None
        # `destroy` reports an interrupted destroy that recovery finishes as its own result
        self.destroying = False

    def __call__(self, event: dict[str, Any]) -> None:
        if self.json:
            sys.stdout.write(json.dumps(event, default=str) + "\n")
            sys.stdout.flush()
            return
        kind = event["event"]
        handler = getattr(self, "on_" + kind.replace(".", "_"), None)
        if handler is not None:
            handler(event)

    def say(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    # --- events ---------------------------------------------------------------

    def on_apply_started(self, ev: dict[str, Any]) -> None:
        self._start(f"applying {ev['name']}", ev.get("steps", 0))

    def on_destroy_started(self, ev: dict[str, Any]) -> None:
        self._start(f"destroying {ev['name']}", ev.get("steps", 0))

    def _start(self, title: str, steps: int) -> None:
        if steps >= PROGRESS_MIN_STEPS and self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TextColumn("{task.fields[current]}"),
                                     console=Console(file=self.stream), transient=True)
            self.progress.start()
            self.task = self.progress.add_task(title, total=steps, current="")

    def on_action_started(self, ev: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress.update(self.task, current=_id(ev))

    def on_action_applied(self, ev: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress.advance(self.task)

    on_action_destroyed = on_action_applied

    def on_action_failed(self, ev: dict[str, Any]) -> None:
        self.stop()
        self.say(f"failed: {_id(ev)}: {ev['error']}; rolling back")

    def on_action_note(self, ev: dict[str, Any]) -> None:
        self.say(f"note: {_id(ev)}: {ev['note']}")

    def on_action_reverted(self, ev: dict[str, Any]) -> None:
        if ev.get("left_gone"):
            self.say(f"  not restored {_id(ev)} (it was gone before this apply)")
            return
        verb = "restored" if ev.get("step") == "destroy" else "reverted"
        self.say(f"  {verb} {_id(ev)}")

    def on_revert_failed(self, ev: dict[str, Any]) -> None:
        self.say(f"  revert FAILED {_id(ev)}: {ev['error']}")

    def on_recovery_started(self, ev: dict[str, Any]) -> None:
        if self.destroying and ev.get("op") == "destroy":
            return
        self.say(f"recovering {ev['name']}: an interrupted {ev.get('op')} "
                 f"(pid {ev.get('pid')}) left an open transaction")

    def on_recovery_finished(self, ev: dict[str, Any]) -> None:
        if self.destroying and ev.get("outcome") == "destroyed":
            return
        self.say(f"recovered {ev['name']}: {ev.get('outcome')}")

    def on_recovery_abandoned(self, ev: dict[str, Any]) -> None:
        what = "destroying everything it left" if ev.get("then") == "destroy" else "going on from what it left"
        self.say(f"{ev['name']}: the interrupted apply cannot be rolled back ({ev['error']}); {what}")

    def on_apply_committed(self, ev: dict[str, Any]) -> None:
        self.stop()

    on_destroy_finished = on_apply_committed
    on_apply_aborted = on_apply_committed

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def close(self) -> None:
        self.stop()


def plan_lines(name: str, changes: Any) -> list[str]:
    """The planner's plan text when it is there, else ours (same line shapes)."""
    try:
        from vbdecl.plan import text
    except ImportError:
        text = None  # type: ignore[assignment]
    if text is not None:
        try:
            return list(text.render_plan(name, list(changes.changes)))
        except (AttributeError, TypeError, KeyError):
            pass
    lines = [f"Environment {name}:", ""]
    for c in changes.drift:
        lines.append("  " + c.line())
    if not changes:
        lines.append(f"No changes: {name} matches its manifest.")
        return lines
    lines += [c.line() for c in changes.todo]
    lines += ["", changes.summary()]
    return lines


def confirm(question: str, assume_yes: bool) -> bool:
    """Ask unless -y, and go on only on y/yes.

    The question goes to stderr (stdout may be redirected to a file); the answer
    is read from stdin, a terminal or not (``echo y | vbdecl apply``). No answer
    (end of input, as from /dev/null or a closed pipe) is no: a script that did
    not pass -y never changes anything by accident.
    """
    if assume_yes:
        return True
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    try:
        line = sys.stdin.readline() if sys.stdin is not None else ""   # None: fd 0 closed
    except (OSError, ValueError):
        line = ""
    if not line:
        sys.stderr.write("\nno answer on stdin: pass -y (--yes) to go on without asking\n")
        return False
    return line.strip().lower() in ("y", "yes")


def check_can_ask(target: str, assume_yes: bool) -> None:
    """``-`` puts the manifest on stdin, where :func:`confirm` reads its answer: with
    no -y, say so at once, rather than plan and take the manifest's end for a no."""
    from vbdecl.engine.sources import STDIN
    from vbdecl.errors import UsageError

    if target == STDIN and not assume_yes:
        raise UsageError("the manifest comes from stdin (-), so there is no answer to read there",
                         hint="pass -y (--yes) to go on without asking, or give the manifest's path")


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def add_engine_options(parser: Any, *, lock: bool = True, yes: bool = True) -> None:
    if yes:
        parser.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    if lock:
        parser.add_argument("--lock-timeout", type=float, default=0.0, metavar="S",
                            help="wait up to S seconds for the environment's lock (default: fail at once)")


def command_line() -> str:
    return " ".join(["vbdecl", *sys.argv[1:]])


def interrupts_roll_back() -> None:
    """SIGTERM interrupts like Ctrl-C, so an apply in progress is rolled back
    (a SIGKILL leaves an open transaction that the next command recovers); the
    step under way finishes first (engine/interrupts.py)."""
    from vbdecl.engine import interrupts

    interrupts.install()


def warn_unknown_faults(plans: list[dict[str, Any]], names: list[str], state_dir: str | None) -> None:
    """``VBDECL_FAULT`` (a test hook) naming an action that is neither in ``plans`` nor
    recorded for the environments ``names``: say so (it would make nothing fail, and a
    test would take that for a pass). Inert unless set."""
    import os

    if not os.environ.get("VBDECL_FAULT"):
        return
    from vbdecl.engine import store
    from vbdecl.engine.faults import unknown, unknown_warning
    from vbdecl.errors import VbdeclError

    known = {str(a["id"]) for plan in plans for a in plan.get("actions") or []}
    for name in dict.fromkeys([*(str(p["name"]) for p in plans), *names]):
        try:
            state = store.load(name, state_dir)
        except VbdeclError:
            state = None
        known.update((state or {}).get("resources") or {})
    missing = unknown(known)
    if missing:
        envs = ", ".join(dict.fromkeys([*(str(p["name"]) for p in plans), *names]))
        print(f"warning: {unknown_warning(missing, f'the plan or the state of {envs}')}",
              file=sys.stderr)

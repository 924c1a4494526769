"""vbdecl ls: environments with status, revision and drift."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

HELP = "list environments: status, revision, drift"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-probe", action="store_true", help="do not probe live state for drift")
    p.add_argument("-a", "--all", action="store_true", help="also destroyed environments (with history)")


def describe(name: str, state_dir: str, probe: bool) -> dict[str, Any] | None:
    from vbdecl.engine import journal, lock, paths, store
    from vbdecl.engine.executor import Engine
    from vbdecl.errors import VbdeclError

    holder = lock.holder(paths.lock_file(name, state_dir))
    try:
        state = store.load(name, state_dir)
        open_txn = journal.open_transaction(journal.read(paths.journal_file(name, state_dir)))
    except VbdeclError as err:
        # one damaged environment is a row of its own: the others are still listed
        return {"name": name, "status": "unreadable", "error": err.message, "hint": err.hint,
                "instance": None, "revision": None, "serial": None, "resources": 0,
                "revisions": len(store.revision_numbers(name, state_dir)), "drift": None,
                "locked_by": holder, "source": None, "labels": {}, "updated": None}
    revs = store.revision_numbers(name, state_dir)
    row: dict[str, Any] = {
        "name": name, "instance": (state or {}).get("instance"),
        "revision": (state or {}).get("revision"), "serial": (state or {}).get("serial"),
        "resources": len((state or {}).get("resources") or {}),
        "revisions": len(revs), "drift": None, "locked_by": holder,
        "source": (((state or {}).get("plan") or {}).get("source") or {}).get("path"),
        "labels": ((state or {}).get("plan") or {}).get("labels") or {},
    }
    if holder is not None:      # (locked, whether or not its holder can be named)
        row["status"] = "busy"
    elif open_txn:
        row["status"] = "needs recovery"
    elif state is None:
        row["status"] = "destroyed"
    else:
        row["status"] = "applied"
    if state is not None and probe and holder is None and not open_txn:
        try:
            changes = Engine(state_dir).changes(state["plan"])
            drift = [c.id for c in changes.drift]
            row["drift"] = drift
            if drift:
                row["status"] = ended(changes.drift, state) or "drifted"
        except Exception as exc:
            row["drift"] = None
            row["probe_error"] = str(exc)
    if state is None and not revs and not open_txn:
        return None
    row["updated"] = _mtime(paths.state_file(name, state_dir))
    return row


def ended(drift: list[Any], state: dict[str, Any]) -> str | None:
    """``exited (0)``, ``killed (SIGTERM)``: how the process ended, when its having
    ended on its own is the only drift (a one-shot environment's, as designed);
    None when there is other drift."""
    from vbdecl.plan.diff import ENDS_ON_ITS_OWN
    from vbdecl.runtime.live import killed_by, read_exit

    if len(drift) != 1 or drift[0].kind not in ENDS_ON_ITS_OWN or drift[0].symbol != "-":
        return None
    record = ((state.get("resources") or {}).get(drift[0].id) or {}).get("record")
    ended = read_exit(record) or {}
    code = ended.get("exit_code")
    if not isinstance(code, int):
        return "exited"
    sig = killed_by(ended)
    if sig is not None:
        return f"killed ({signal_name(sig)})"
    return f"exited ({code})"


def signal_name(sig: int) -> str:
    """``SIGKILL`` for 9; ``signal 99`` for a number no signal has."""
    import signal

    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _mtime(path: str) -> float | None:
    try:
        return float(os.stat(path).st_mtime)
    except OSError:
        return None


def run(args: argparse.Namespace) -> int:
    from vbdecl.cli.progress import emit_json
    from vbdecl.engine import paths, store

    state_dir = str(paths.state_root(args.state_dir))
    rows = []
    for name in store.list_envs(state_dir):
        row = describe(name, state_dir, not args.no_probe)
        if row is None or (row["status"] == "destroyed" and not args.all):
            continue
        rows.append(row)
    if args.json:
        emit_json(rows)
        return 0
    if not rows:
        print("no environments")
        return 0
    header: tuple[str, ...] = ("NAME", "STATUS", "REVISION", "INSTANCE", "RESOURCES", "DRIFT", "UPDATED")
    table = [header]
    for r in rows:
        drift = "-" if r["drift"] is None else (", ".join(r["drift"][:3]) + (" ..." if len(r["drift"]) > 3 else "") or "none")
        updated = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["updated"])) if r["updated"] else "-"
        table.append((r["name"], r["status"], str(r["revision"] or "-"), r["instance"] or "-",
                      str(r["resources"]), drift, updated))
    widths = [max(len(t[i]) for t in table) for i in range(len(header))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    for r in rows:
        if r.get("error"):
            print(f"warning: {r['name']}: {r['error']}" + (f"\n  hint: {r['hint']}" if r.get("hint") else ""),
                  file=sys.stderr)
    return 0

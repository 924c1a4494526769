"""vbdecl history NAME: the stored revisions of an environment."""

from __future__ import annotations

import argparse
import time

HELP = "list an environment's revisions (time, manifest hash, source, git commit, user)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")


def run(args: argparse.Namespace) -> int:
    from vbdecl.cli.progress import emit_json
    from vbdecl.engine import paths, store

    state_dir = str(paths.state_root(args.state_dir))
    revs = store.history(args.name, state_dir)
    if not revs:
        if store.load_or_none(args.name, state_dir) is not None:
            from vbdecl.errors import StateError

            raise StateError(f"environment {args.name!r} has no revisions left (removed from "
                             f"{paths.revisions_dir(args.name, state_dir)})", hint=f"`vbdecl status {args.name}` "
                             "shows it; its next apply records a revision again")
        # (as the other commands say it: a day-2 review saw "has no history" here alone)
        raise store.not_committed(args.name, state_dir)
    state = store.load(args.name, state_dir)
    current = (state or {}).get("revision")
    if args.json:
        for r in revs:
            r["current"] = r["revision"] == current
        emit_json(revs)
        return 0
    rows = [("REV", "TIME", "MANIFEST", "SOURCE", "GIT", "USER", "NOTE")]
    for r in revs:
        git = r.get("git") or {}
        git_text = (git.get("commit", "")[:10] + ("+untracked" if git.get("untracked") else
                                                   "+dirty" if git.get("dirty") else "")) if git else "-"
        rows.append((("*" if r["revision"] == current else " ") + str(r["revision"]),
                     time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["time"])),
                     str(r.get("manifest_hash") or "-")[:19], r.get("source") or "-", git_text,
                     r.get("user") or "-", r.get("note") or ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0

"""vbdecl doctor: what this machine's kernel offers vbdecl, and what to do about gaps."""

from __future__ import annotations

import argparse
import json

HELP = "check the kernel: namespaces, unprivileged user namespaces, cgroups, overlayfs, nftables, seccomp, Landlock"

# Missing these makes vbdecl unusable; the rest only disable features.
REQUIRED = ("kernel", "namespace.mount", "namespace.pid")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("Exit codes: 0 vbdecl can run here (optional features may be missing, "
                     "each with a hint), 1 something vbdecl needs is missing.")


def run(args: argparse.Namespace) -> int:
    from vbdecl import __version__
    from vbdecl.sys.probe import all_checks

    checks = all_checks()
    failed_required = [name for name in REQUIRED if not checks[name]["ok"]]
    if args.json:
        out = {"version": __version__, "ok": not failed_required, "checks": checks}
        print(json.dumps(out, indent=2, default=str))
        return 1 if failed_required else 0
    width = max(len(n) for n in checks)
    for name, check in checks.items():
        mark = "ok  " if check["ok"] else ("FAIL" if name in REQUIRED else "warn")
        print(f"{mark}  {name:<{width}}  {check['detail']}")
        if not check["ok"] and check.get("hint"):
            print(f"      {'':<{width}}  hint: {check['hint']}")
        elif check.get("hint") and name == "cgroups":
            print(f"      {'':<{width}}  note: {check['hint']}")
    missing = [n for n, c in checks.items() if not c["ok"]]
    if failed_required:
        print(f"vbdecl cannot run here: {', '.join(failed_required)} missing")
        return 1
    print("vbdecl can run here" + (f"; not available: {', '.join(missing)}" if missing else "; everything available"))
    return 0

"""The console scripts start without ``site`` and isolated (the Makefile's fast_start).

``vb``, ``vbdecl run`` and ``vbdecl exec`` pay the interpreter's start every time;
``site`` is ~0.6 ms of it. The installed scripts run on ``vbdecl-python``, a link
to the venv's interpreter beside a ``._pth`` file that gives the path ``site``
would give.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
FAST = BIN / "vbdecl-python"
INSTALL_HINT = "install with `make` (the Makefile's fast_start makes it)"


def path_of(argv: list[str]) -> list[str]:
    code = "import sys; print(sys.flags.isolated, sys.flags.no_site); print(*sys.path, sep='\\n')"
    out = subprocess.run([*argv, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH="/nonexistent-vbdecl-test")).stdout
    return out.splitlines()


def test_the_scripts_run_on_the_link_without_site() -> None:
    assert FAST.is_symlink(), f"{FAST} is missing: {INSTALL_HINT}"
    for script in ("vb", "vbdecl"):
        first = (BIN / script).read_text().splitlines()[0]
        assert first == f"#!{FAST}", f"{script} starts with {first!r}: {INSTALL_HINT}"
    flags, *_ = path_of([str(FAST)])
    assert flags == "1 1"          # isolated: the caller's PYTHONPATH is not vbdecl's


def test_the_link_finds_what_the_venv_finds() -> None:
    _, *venv = path_of([sys.executable, "-I"])
    _, *fast = path_of([str(FAST)])
    assert fast == [p for p in venv if p and os.path.exists(p)]
    # vbdecl's own package and its dependencies (pydantic for apply, validate, ...)
    subprocess.run([str(FAST), "-c", "import vbdecl.entry, pydantic, ruamel.yaml, rich"], check=True)


def test_the_installed_cli_runs_through_it() -> None:
    r = subprocess.run([str(BIN / "vbdecl"), "--version"], capture_output=True, text=True, check=True)
    assert r.stdout.strip()
    r = subprocess.run([str(BIN / "vb"), "--version"], capture_output=True, text=True, check=True)
    assert r.stdout.strip()

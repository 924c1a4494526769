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
import time
from importlib.machinery import all_suffixes
from pathlib import Path

import vbdecl

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
    flags, *path = path_of([str(FAST)])
    assert flags.split()[1] == "1"                     # no site
    assert "/nonexistent-vbdecl-test" not in path      # the caller's PYTHONPATH is not vbdecl's


def test_the_link_finds_what_the_venv_finds() -> None:
    """The same entries, the checkout vbdecl is installed from first (where nothing
    else is found first but vbdecl, which is found there at once)."""
    _, *venv = path_of([sys.executable, "-I"])
    _, *fast = path_of([str(FAST)])
    own = str(Path(vbdecl.__path__[0]).parent)
    assert fast[0] == own
    assert fast == [own] + [p for p in venv if p and os.path.exists(p) and p != own]
    # vbdecl's own package and its dependencies (pydantic for apply, validate, ...)
    subprocess.run([str(FAST), "-c", "import vbdecl.entry, pydantic, ruamel.yaml, rich"], check=True)


def test_vbdecl_is_the_only_module_of_the_checkout() -> None:
    """The checkout comes first on the link's path: a module or package beside vbdecl
    there would hide one of the same name in the standard library or the venv.
    (Directories without an __init__.py are namespace portions, which never hide one.)"""
    own = Path(vbdecl.__path__[0]).parent
    suffixes = tuple(all_suffixes())
    modules = sorted(p.name for p in own.iterdir()
                     if (p / "__init__.py").is_file() or p.name.endswith(suffixes))
    assert modules == ["vbdecl"]


def test_the_installed_cli_runs_through_it() -> None:
    r = subprocess.run([str(BIN / "vbdecl"), "--version"], capture_output=True, text=True, check=True)
    assert r.stdout.strip()
    r = subprocess.run([str(BIN / "vb"), "--version"], capture_output=True, text=True, check=True)
    assert r.stdout.strip()


def test_a_python_variable_of_the_callers_still_restarts_it_isolated() -> None:
    """The ._pth interpreter says it is isolated (sys.flags), yet CPython has read
    PYTHONWARNINGS, PYTHONOPTIMIZE and the like before it found the file: vb starts
    again with -I. It is caught reading --args from a pipe, before any sandbox."""
    r, w = os.pipe()
    try:
        proc = subprocess.Popen([str(BIN / "vb"), "--args", str(r)], pass_fds=(r,),
                                env=dict(os.environ, PYTHONWARNINGS="error"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        os.close(r)
    try:
        cmdline = b""
        for _ in range(500):           # (the restart replaces the process image)
            with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
                cmdline = f.read()
            if b"\0-I\0" in cmdline:
                break
            time.sleep(0.01)
        assert b"\0-I\0" in cmdline, cmdline
    finally:
        os.close(w)                    # (vb reads no arguments, says so and exits)
        proc.wait(timeout=30)

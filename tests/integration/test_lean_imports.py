"""The hot paths import only what they use: ``vbdecl run`` (plan cached), ``vbdecl exec``
and ``vb``, in the parent and in every forked child.

Start-up time is most of a sandbox run (issue 5's benchmark), and each of these
standard-library modules costs milliseconds on its own: none of them may come
back on a hot path. ``-X importtime`` reports the imports of the forked children
too, which ``sys.modules`` of the parent would miss.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from testmanifests import head

VBDECL = str(Path(sys.executable).parent / "vbdecl")
# The interpreter the installed scripts run on: without site, which imports os.
PYTHON = str(Path(sys.executable).parent / "vbdecl-python")
# Heavy third-party modules, and standard-library ones the hot paths can do without.
# json (with re and enum) among them: a cached run reads its plan and seccomp program,
# exec a copy of the environment's state, as marshal; vb compiles a plan it never stores.
# ctypes: syscalls go through vbdecl's own C extension (ctypes' import is ~2 ms).
# graphlib (with heapq and types): only for a plan whose actions need reordering.
# setproctitle (with logging, ~4 ms): only for a live environment's init and supervisor.
# os (with _collections_abc and posixpath, ~0.9 ms): vbdecl/sys/oslite.py has its calls.
# struct and stat (found through sys.path, ~0.1 ms each): vbdecl's modules import the
# builtin _struct and _stat they re-export, as struct and stat.
FORBIDDEN = ("os", "struct", "stat", "posixpath", "genericpath", "_collections_abc", "pydantic", "pydantic_core", "ruamel", "yaml", "rich", "pyroute2", "typer", "click",
             "ctypes", "argparse", "typing", "json", "pathlib", "re", "ipaddress", "urllib", "dataclasses",
             "tempfile", "hashlib", "contextlib", "inspect", "enum", "functools", "collections",
             "importlib", "warnings", "graphlib", "heapq", "types", "setproctitle", "logging")

MANIFEST = head("{name}") + """\
    - {{type: proc, target: /proc}}
    - {{type: dev, target: /dev}}
    - {{type: tmpfs, target: /tmp}}
  namespaces: {{pid: true, mount: true}}
  process:
    command: [/bin/sleep, "600"]
"""


def imported(args: list[str], env: dict[str, str], entry: str = "main") -> set[str]:
    """The modules a ``vbdecl.entry`` call imports (parent and children)."""
    code = (f"import sys\nfrom vbdecl.entry import {entry}\nrc = {entry}({args!r})\n"
            "print('MODULES', *sys.modules, file=sys.stderr)\nsys.exit(rc)\n")
    r = subprocess.run([PYTHON, "-X", "importtime", "-c", code], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    names = set()
    for line in r.stderr.splitlines():
        if line.startswith("MODULES "):          # also what importlib.import_module loaded
            names.update(line.split()[1:])
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                names.add(name)
    return names


def bad(names: set[str]) -> list[str]:
    return sorted(n for n in names if n.split(".")[0] in FORBIDDEN)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, VBDECL_CACHE_DIR=str(tmp_path / "cache"),
               VBDECL_STATE_DIR=str(tmp_path / "state"))
    env.pop("PYTHONWARNINGS", None)    # warning filters make the interpreter import warnings
    return env


def test_cached_run_and_exec_import_nothing_they_do_not_use(env: dict[str, str], tmp_path: Path) -> None:
    name = "lean-" + os.urandom(3).hex()
    path = tmp_path / "lean.yaml"
    path.write_text(MANIFEST.format(name=name))
    first = subprocess.run([VBDECL, "run", str(path), "--", "/bin/true"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr         # compiles the plan and caches it
    run = imported(["run", str(path), "--", "/bin/true"], env)
    assert bad(run) == []
    assert "vbdecl.model.manifest" not in run and "vbdecl.plan.compile" not in run
    # VBDECL_FAULT is a test hook: its module only when it is set (then the run checks it)
    assert "vbdecl.engine.faults" not in run
    faulty = imported(["run", str(path), "--", "/bin/true"], {**env, "VBDECL_FAULT": "mount[/nope]"})
    assert "vbdecl.engine.faults" in faulty

    applied = subprocess.run([VBDECL, "apply", "--yes", str(path)], env=env,
                             capture_output=True, text=True, timeout=60)
    assert applied.returncode == 0, applied.stderr
    try:
        first = subprocess.run([VBDECL, "exec", name, "--", "/bin/true"], env=env,
                               capture_output=True, text=True, timeout=60)
        assert first.returncode == 0, first.stderr     # reads state.json, keeps a copy
        assert bad(imported(["exec", name, "--", "/bin/true"], env)) == []
    finally:
        done = subprocess.run([VBDECL, "destroy", "--yes", name], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr


def test_vb_imports_nothing_it_does_not_use(env: dict[str, str]) -> None:
    args = ["vb", "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink",
            "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin", "--proc", "/proc", "--dev", "/dev",
            "--unshare-pid", "--tmpfs", "/tmp", "--setenv", "A", "b", "--chdir", "/tmp", "/usr/bin/true"]
    assert bad(imported(args, env, entry="vb_main")) == []

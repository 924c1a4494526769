"""vb's start-up imports only the standard library for plain runs (no pydantic, ruamel,
yaml, rich or pyroute2), and only vb's own run path of vbdecl."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("pydantic", "pydantic_core", "ruamel", "yaml", "rich", "pyroute2", "setproctitle")

SCRIPT = r"""
import json, sys
from vbdecl.cli.vb import main
rc = main(["vb", "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64",
           "/lib64", "--symlink", "usr/bin", "/bin", "--proc", "/proc", "--dev", "/dev", "--unshare-pid",
           "--tmpfs", "/tmp", "--setenv", "A", "b", "--chdir", "/tmp", "/usr/bin/true"])
print(json.dumps({"rc": rc, "modules": sorted(sys.modules)}))
"""


def test_plain_vb_run_imports_no_heavy_module() -> None:
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["rc"] == 0
    heavy = [m for m in out["modules"] if m.split(".")[0] in HEAVY]
    assert heavy == []
    ours = {m for m in out["modules"] if m.startswith("vbdecl.")}
    # the manifest model, its loader and the full CLI stay out (model.names is a plain table)
    assert not ours & {"vbdecl.model.manifest", "vbdecl.model.load", "vbdecl.model.normalize", "vbdecl.cli.main", "vbdecl.net"}, ours


def test_print_manifest_may_use_ruamel_but_not_pydantic() -> None:
    script = ("import sys, io, contextlib\nfrom vbdecl.cli.vb import main\nbuf = io.StringIO()\n"
              "with contextlib.redirect_stdout(buf):\n"
              "    main(['vb', '--print-manifest', '--ro-bind', '/usr', '/usr', 'true'])\n"
              "print(sorted(m for m in sys.modules if m.startswith('pydantic')))")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"

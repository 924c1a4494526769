"""A live environment from Python: apply, exec into it, read its log, destroy.

    sudo .venv/bin/python examples/api/live.py
"""

import os
import shutil
import tempfile

import vbdecl
import vbdecl.api

HERE = os.path.dirname(os.path.abspath(__file__))
MANIFEST = os.path.join(HERE, "..", "..", "manifests", "hello.yaml")

state = tempfile.mkdtemp(prefix="vbdecl-example-state-", dir="/var/tmp")
plan = vbdecl.compile_plan(MANIFEST)
plan["spec"]["process"]["command"] = ["/bin/sh", "-c", "echo up; exec sleep 3600"]
try:
    vbdecl.apply(plan, state_dir=state)
    try:
        code = vbdecl.api.exec_in(plan["name"], ["/bin/sh", "-c", "echo inside: $$; ls /"],
                                  state_dir=state)
        print("exec exit code:", code)
        with open(os.path.join(state, "envs", plan["name"], "logs", "process.log")) as f:
            print("process log:", f.read().strip())
    finally:
        vbdecl.destroy(plan["name"], state_dir=state)
finally:
    shutil.rmtree(state, ignore_errors=True)

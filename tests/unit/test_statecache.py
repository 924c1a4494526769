"""exec's marshal copies of committed state (vbdecl.engine.statecache) do not outlive
their environments: destroy removes the environment's copy, and every copy whose
state.json is gone (left by destroys before copies were removed)."""

from __future__ import annotations

import marshal
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import testops

from vbdecl.engine import paths, statecache
from vbdecl.engine.executor import Engine
from vbdecl.runtime.live import load_state

testops.register()


def test_destroy_removes_the_cached_state_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VBDECL_CACHE_DIR", str(tmp_path / "cache"))
    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    web = testops.make_plan("web", root, mounts=0, files=2)
    web["spec"] = {"process": {"env": {"API_TOKEN": "s3cret-value"}}}
    other = testops.make_plan("other", root, mounts=0, files=1)
    Engine(sd).apply(web)
    Engine(sd).apply(other)
    assert load_state("web", str(sd))["plan"]["spec"]["process"]["env"] == \
        {"API_TOKEN": "s3cret-value"}
    load_state("other", str(sd))
    copies = tmp_path / "cache" / "state"
    web_copy = Path(statecache.copy_path(paths.state_file("web", str(sd))))
    other_copy = Path(statecache.copy_path(paths.state_file("other", str(sd))))
    assert web_copy.exists() and b"s3cret-value" in web_copy.read_bytes()
    # a copy left by an environment destroyed before copies were removed
    stale = copies / ("0" * 64 + ".marshal")
    stale.write_bytes(marshal.dumps({"key": f"{tmp_path}/gone/envs/x/state.json\0" + "1\0" * 3,
                                     "state": {"secret": "old"}}))
    junk = copies / ("1" * 64 + ".marshal")
    junk.write_bytes(b"not marshal")

    Engine(sd).destroy("web")

    assert not web_copy.exists() and not stale.exists() and not junk.exists()
    assert other_copy.exists()                        # a live environment's copy stays
    assert not any(b"s3cret-value" in p.read_bytes() for p in copies.iterdir())
    Engine(sd).destroy("other")
    assert os.listdir(copies) == []

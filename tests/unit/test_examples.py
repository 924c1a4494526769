"""Every manifest shipped in manifests/ and examples/ validates and compiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from vbdecl.model import load_normalized
from vbdecl.plan.compile import compile_doc

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted([*ROOT.glob("manifests/*.yaml"), *ROOT.glob("examples/**/*.yaml")])


def test_there_are_shipped_manifests():
    names = {p.name for p in SHIPPED}
    assert {"hello.yaml", "devshell.yaml", "service.yaml", "build.yaml"} <= names
    assert any("gitops" in str(p) for p in SHIPPED)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_manifest_validates_and_compiles(path: Path):
    docs = load_normalized(str(path))
    assert docs
    for doc in docs:
        plan = compile_doc(doc)
        assert plan["actions"][-1]["id"] == "process"

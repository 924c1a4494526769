"""Hints suggest only keys the entry they are about accepts.

A hint that names a key the loader then rejects ("set optional: true" on a
``file`` entry: "allowed keys: target, content, source, mode") sends the
user in a circle. Every ``key: value`` a setup hint suggests for a
filesystem entry must load on an entry of that type.
"""

from __future__ import annotations

import errno
import re

import pytest

from vbdecl.model.load import load_text
from vbdecl.runtime.rootfs import entry_hint

HEAD = "apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: hint}\nspec:\n  filesystem:\n"

# the types whose entries name a host source (docs/plan-format.md, FSENTRY)
WITH_SOURCE = {
    "bind": {"type": "bind", "source": "/nonexistent/x", "target": "/x", "optional": False},
    "ro-bind": {"type": "ro-bind", "source": "/nonexistent/x", "target": "/x", "optional": False},
    "dev-bind": {"type": "dev-bind", "source": "/nonexistent/x", "target": "/x", "optional": False},
    "file": {"type": "file", "source": "/nonexistent/x", "target": "/x", "content": None, "mode": None},
}


def _suggested_keys(hint: str) -> list[tuple[str, str]]:
    """``key: value`` pairs a hint suggests (``set optional: true``, ``content:``)."""
    return re.findall(r"\b([a-z_]+): ?([a-z]*)", hint)


@pytest.mark.parametrize("kind", sorted(WITH_SOURCE))
def test_missing_source_hint_suggests_only_accepted_keys(kind: str) -> None:
    entry = WITH_SOURCE[kind]
    hint = entry_hint(FileNotFoundError(errno.ENOENT, "No such file or directory"), entry)
    assert hint and entry["source"] in hint
    suggested = _suggested_keys(hint)
    assert suggested, hint      # it says what to do, in the manifest's words
    for key, value in suggested:
        item = {"type": kind, "target": "/x", "source": "/nonexistent/x"}
        if key == "content":
            item.pop("source")
            item["content"] = "text"
        elif key != "source":
            item[key] = value or "x"
        text = HEAD + "    - {" + ", ".join(f"{k}: {v}" for k, v in item.items()) + "}\n"
        load_text(text)   # raises ManifestError when the hint names a key the entry rejects


def test_missing_source_hints_per_type() -> None:
    enoent = FileNotFoundError(errno.ENOENT, "No such file or directory")
    assert "optional: true" in (entry_hint(enoent, WITH_SOURCE["bind"]) or "")
    assert "optional" not in (entry_hint(enoent, WITH_SOURCE["file"]) or "")
    assert "content:" in (entry_hint(enoent, WITH_SOURCE["file"]) or "")
    # vb speaks bubblewrap's options, not manifest keys
    vb_hint = entry_hint(enoent, WITH_SOURCE["ro-bind"], vb=True) or ""
    assert "--ro-bind-try" in vb_hint and "optional" not in vb_hint


@pytest.mark.parametrize(("err", "fragment"), [
    (errno.EROFS, "on a read-only mount"),      # not "the target's parent": the target itself
    (errno.EPERM, "owner must be mapped"),      # not "needs CAP_SYS_ADMIN": chmod needs ownership
])
def test_chmod_hints_name_what_chmod_needs(err: int, fragment: str) -> None:
    hint = entry_hint(OSError(err, "x"), {"type": "chmod", "target": "/h", "mode": 0o700}) or ""
    assert fragment in hint, hint


def _required_keys() -> set[str]:
    from pydantic import BaseModel

    from vbdecl.model import manifest as m

    return {name for cls in vars(m).values()
            if isinstance(cls, type) and issubclass(cls, BaseModel) and cls.__module__ == m.__name__
            for name, field in cls.model_fields.items() if field.is_required() and name != "type"}


def test_every_required_key_has_a_hint_when_missing() -> None:
    from vbdecl.model.load import _MISSING_HINTS

    assert _required_keys() - set(_MISSING_HINTS) == set()


def test_a_missing_key_names_the_entry_type_and_says_what_to_add() -> None:
    from vbdecl.errors import ManifestError

    with pytest.raises(ManifestError) as err:
        load_text(HEAD + "    - {type: symlink, target: /bin}\n", "m.yaml")
    (problem,) = err.value.problems
    assert problem.where == "m.yaml:6:7"
    assert problem.message == "missing required key 'points_to' in spec.filesystem[0] (a symlink entry)"
    assert problem.hint and problem.hint.startswith("add points_to: ")


def test_a_live_apply_gives_the_entrys_hint_not_the_syscalls() -> None:
    """A new-user review: a file entry's missing source, met while a live apply copied
    it, said "mark the entry optional" (the syscall layer's words), which a file entry
    does not accept. The syscall layer names no key; the apply's filesystem job gives
    the hint a run gives for that entry."""
    from vbdecl.ops.fs import _MountJob
    from vbdecl.sys.mount import _hint_for

    assert "optional" not in (_hint_for(errno.ENOENT) or "")
    exc = FileNotFoundError(errno.ENOENT, "No such file or directory")
    exc.hint = "the path does not exist"    # type: ignore[attr-defined]

    class Failing:
        def make(self, entry: object) -> None:
            raise exc

    job = _MountJob(dict(WITH_SOURCE["file"]))
    with pytest.raises(OSError) as raised:
        job.host(Failing())
    hint = getattr(raised.value, "hint", "")
    assert "/nonexistent/x does not exist" in hint and "content:" in hint and "optional" not in hint


def test_file_and_bind_sources_are_checked_before_an_apply_changes_anything(tmp_path) -> None:
    """Op.preflight (the executor runs it for every create and update before the first
    step): a file entry's source as a bind's, each hint in its own type's keys."""
    from vbdecl.ops.fs import Bind, File

    missing = str(tmp_path / "missing")
    assert "optional" not in (File().preflight({"target": "/x", "source": missing}) or "x optional")
    assert "content:" in (File().preflight({"target": "/x", "source": missing}) or "")
    assert "optional: true" in (Bind().preflight({"target": "/x", "source": missing}) or "")
    assert Bind().preflight({"target": "/x", "source": missing, "optional": True}) is None
    assert "is a directory" in (File().preflight({"target": "/x", "source": str(tmp_path)}) or "")
    (tmp_path / "f").write_text("x")
    assert File().preflight({"target": "/x", "source": str(tmp_path / "f")}) is None
    assert File().preflight({"target": "/x", "content": "x"}) is None
    assert File().preflight({"target": "/x", "fd": 3}) is None


@pytest.mark.parametrize(("spec", "message", "hint"), [
    ("process: {user: root}", "spec.process.user: expected an integer, got string 'root'",
     "vbdecl reads no passwd file: give a numeric uid, such as user: 0"),
    ("process: {group: wheel}", "spec.process.group: expected an integer", "reads no group file"),
    ("process: {command: []}", "spec.process.command: needs at least 1 item(s), got 0",
     "leave process.command out for /bin/sh, or name the program"),
    ("limits: {cpu: 0}", "spec.limits.cpu: 0 is out of range: it must be >= 0.01",
     "cpu is in CPUs (cores), e.g. 0.5; leave it out for no limit"),
])
def test_values_people_write_get_a_hint(spec: str, message: str, hint: str) -> None:
    """A UX review: these errors came without a hint."""
    from vbdecl.errors import ManifestError

    with pytest.raises(ManifestError) as info:
        load_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: hint}\nspec:\n  " + spec + "\n")
    assert message in info.value.message and hint in (info.value.hint or ""), info.value


def test_vb_suggests_the_size_unit_the_manifest_does() -> None:
    """A UX review: `vb --limit-memory 64mb` said "unknown size unit 'mb'" alone; the
    manifest's error says "did you mean 64M?"."""
    from vbdecl.vb.parse import VbUsageError, parse, to_document

    with pytest.raises(VbUsageError, match=r"--limit-memory: unknown size unit 'mb' in '64mb' \(did you mean 64M\?\)"):
        to_document(parse(["--limit-memory", "64mb", "true"]))

"""What ``apply``/``destroy`` were pointed at: a manifest, a saved plan, a directory.

A *saved plan* is what ``vbdecl plan -o`` writes (``vbdecl.plan.saved``): a
compiled plan (``"format"`` and ``"actions"``) plus the state it was made
against (``"state"``: ``{"lineage", "serial"}``) and where it came from
(``"saved"``). Manifests are compiled through the planner (imported lazily).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vbdecl.errors import UsageError, VbdeclError
from vbdecl.hashing import file_sha256

MANIFEST_SUFFIXES = (".yaml", ".yml")
STDIN = "-"                 # the FILE argument that means standard input
STDIN_NAME = "<stdin>"      # how messages name it (<stdin>:line:col)


@dataclass
class Source:
    plan: dict[str, Any]
    saved: dict[str, Any] | None = None     # the saved-plan file's content, if a PLAN
    path: str | None = None


def edited_since(src: Source) -> bool:
    """Whether ``src``'s manifest file now says something else for its environment
    than when it was read (an apply that waited for the lock; a day-2 review edited the
    file meanwhile and was told the environment "matches its manifest"). Pipes, stdin
    and saved plans (which check their own freshness) are never edited since."""
    import stat

    if src.saved is not None or src.path in (None, STDIN_NAME):
        return False
    try:
        if not stat.S_ISREG(os.stat(src.path).st_mode):
            return False
        from vbdecl.engine.plancache import plans_for_file

        now = [p for p in plans_for_file(src.path) if p.get("name") == src.plan.get("name")]
    except (OSError, VbdeclError):
        return True      # (gone, or no longer valid: not what was read either)
    return [p.get("manifest_hash") for p in now] != [src.plan.get("manifest_hash")]


def read_stdin() -> bytes:
    """The manifest given as ``-``, read once (at most one byte over the loader's
    limit, so that the loader can say it is too large)."""
    from vbdecl.model.yamlsafe import MAX_BYTES

    if sys.stdin is None:       # (fd 0 closed)
        raise UsageError("- means the manifest is on stdin, and stdin is closed",
                         hint="give the manifest's path, or pipe it in: vbdecl plan - < env.yaml")
    return sys.stdin.buffer.read(MAX_BYTES + 1)


def read_given(target: str) -> tuple[str, bytes] | None:
    """A manifest argument that can be read only once, read: ``-`` (stdin, named
    ``<stdin>``) or a pipe such as a process substitution (``vbdecl diff <(git show
    HEAD~1:env.yaml) env.yaml``, named by its path); None for anything else. Like
    stdin, such a manifest has no file of its own: relative paths are to the
    current directory, and no source is recorded."""
    import stat

    from vbdecl.model.yamlsafe import MAX_BYTES

    if target == STDIN:
        return STDIN_NAME, read_stdin()
    try:
        if not stat.S_ISFIFO(os.stat(target).st_mode):
            return None
        with open(target, "rb") as f:
            return target, f.read(MAX_BYTES + 1)
    except OSError:
        return None     # (the loader says what is wrong with the path, for people)


_SAVED_PLAN_STARTS = (b"{", b" ", b"\n")


def is_saved_plan(path: Path) -> dict[str, Any] | None:
    if path.suffix in MANIFEST_SUFFIXES:
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(1)
            if head not in _SAVED_PLAN_STARTS:
                return None
            data = head + f.read()
    except OSError:
        return None
    return saved_plan_in(data, str(path))


# How every plan `plan -o` writes begins (its keys sorted, "actions" first)
_SAVED_PLAN_HEAD = b'{"actions":'


def saved_plan_in(data: bytes, name: str = STDIN_NAME) -> dict[str, Any] | None:
    """The saved plan that ``data`` (read from ``name``) is, or None (a manifest, say).
    One that begins as a saved plan does but does not parse is said to be damaged (a
    review's plan cut in half was reported as a YAML syntax error)."""
    if data[:1] not in _SAVED_PLAN_STARTS:
        return None
    try:
        plan = json.loads(data)
    except ValueError as exc:
        if data.startswith(_SAVED_PLAN_HEAD):
            from vbdecl.errors import StalePlanError

            raise StalePlanError(f"{name} is a damaged saved plan ({exc})",
                                 hint="make it again: vbdecl plan FILE -o PLANFILE") from None
        return None
    if isinstance(plan, dict) and "actions" in plan and "format" in plan:
        return plan
    return None


def compile_manifest(path: Path) -> list[dict[str, Any]]:
    """Every environment of a manifest file, compiled to plans."""
    from vbdecl.plan import compile as planner

    fn = getattr(planner, "compile_file", None)
    if fn is not None:
        return list(fn(str(path)))
    from vbdecl.model import load as loader
    from vbdecl.model import normalize as norm

    abspath = os.path.abspath(path)
    result = loader.load_path(abspath, display=str(path))
    result.raise_for_problems()
    plans = []
    for index, env in result.environments:
        doc = norm.normalize(env, base_dir=os.path.dirname(abspath),
                             source={"path": abspath, "document": index})
        plans.append(planner.compile_doc(doc))
    return plans


def pin_file_sources(plans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each ``file`` entry that copies a host file, pinned to that file's content now
    (params ``source_sha256``): an edited source is a change that plan shows and
    apply makes, and a saved plan or a revision copies only what it was made with
    (fs.File.preflight). A seccomp profile file is read into the plan
    (``security.seccomp.profile_text``, of the spec and of the process's params): its
    edit is a change of the process that plan shows, and until it is applied the
    process and ``exec`` go by the profile the environment was applied with (a day-2
    review found exec under the edited file, the process under the old one, and
    plan saying nothing). Plans of plan and apply; ``run`` reads what is there."""
    for plan in plans:
        _pin_profile((plan.get("spec") or {}).get("security"))
        for action in plan.get("actions") or []:
            params = action.get("params") or {}
            if action.get("kind") == "fs.file" and params.get("source") and params.get("fd") is None \
                    and params.get("content") is None:
                digest = file_sha256(str(params["source"]))
                if digest is not None:
                    params["source_sha256"] = digest
            elif action.get("kind") == "proc.main":
                _pin_profile(params.get("security"))
    return plans


def _pin_profile(security: Any) -> None:
    setting = security.get("seccomp") if isinstance(security, dict) else None
    if not isinstance(setting, dict) or not setting.get("profile") or "profile_text" in setting:
        return
    try:
        with open(str(setting["profile"]), encoding="utf-8") as f:
            setting["profile_text"] = f.read()
    except (OSError, UnicodeDecodeError):
        pass        # (said where it is read: the process's preflight, or its start)


def manifest_files(paths: list[str]) -> list[str]:
    """Files as given; directories searched recursively for *.yaml / *.yml, in
    sorted order, skipping hidden files and directories; a file given twice (or also
    found in a directory given) once, where it comes first. The one walk behind
    validate, plan and apply of a DIR."""
    found: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found.extend(os.path.join(root, f) for f in sorted(files)
                             if f.endswith(MANIFEST_SUFFIXES) and not f.startswith("."))
        else:
            found.append(p)
    out: list[str] = []
    seen: set[str] = set()
    for p in found:
        real = p if p == STDIN else os.path.realpath(p)
        if real not in seen:
            seen.add(real)
            out.append(p)
    return out


def _applied_sources(state_dir: str | None) -> Iterator[tuple[str, str]]:
    """(name, real path of its manifest) of each environment applied from a file."""
    from vbdecl.engine import store

    for name in store.list_envs(state_dir):
        # (another environment's damaged state must not stop this plan or apply: a review)
        state = store.load_or_none(name, state_dir)
        src_path = ((state or {}).get("plan") or {}).get("source") or {}
        if state and src_path.get("path"):
            yield name, os.path.realpath(src_path["path"])


def prune_candidates(directory: str, keep: list[str], state_dir: str | None) -> list[str]:
    """The environments ``apply DIR --prune`` destroys: applied from a manifest in
    ``directory`` (or a directory below it that is not hidden) and not in ``keep``,
    the names the directory holds now."""
    directory = os.path.realpath(directory)
    out = []
    for name, source in _applied_sources(state_dir):
        if name in keep:
            continue
        if os.path.commonpath([source, directory]) != directory or any(
                part.startswith(".") for part in os.path.relpath(source, directory).split(os.sep)):
            continue      # not from this directory or one below it (hidden ones are not read)
        out.append(name)
    return out


def left_out(target: str, keep: list[str], state_dir: str | None) -> list[str]:
    """The environments applied from the manifest file ``target`` (or from a manifest of
    the directory ``target``, as :func:`prune_candidates`) that it no longer holds:
    deleted from the file, or renamed there. None for stdin or a saved plan."""
    if target == "-" or not os.path.exists(target):
        return []
    if os.path.isdir(target):
        return prune_candidates(target, keep, state_dir)
    real = os.path.realpath(target)
    return [name for name, source in _applied_sources(state_dir) if source == real and name not in keep]


def check_unique_names(plans: list[tuple[str, dict[str, Any]]]) -> None:
    """Refuse environments of several files (``(file, plan)``, the file as given) that
    share a name: a ManifestError at each file's metadata.name. The model (pydantic) is
    imported only to locate names that are used twice."""
    names = [plan["name"] for _file, plan in plans]
    if len(set(names)) == len(names):
        return
    from vbdecl.errors import ManifestError
    from vbdecl.model.load import duplicate_names

    found = duplicate_names([(plan["name"], file, (plan.get("source") or {}).get("document", 0))
                             for file, plan in plans])
    problems = [p for file_problems in found.values() for p in file_problems]
    if problems:
        raise ManifestError(problems[0].message, where=problems[0].where, hint=problems[0].hint,
                            problems=problems)


def no_manifests(target: str) -> UsageError:
    return UsageError(f"{target}: no manifest files (*.yaml, *.yml) in this directory or below",
                      hint="point at a manifest, or at a directory that holds manifests")


def load(target: str, *, allow_empty: bool = False) -> list[Source]:
    """Plans for a FILE, PLAN or DIR argument, or ``-`` (a manifest or a saved plan
    on stdin); a DIR without manifests is an error unless ``allow_empty``: apply
    --prune of an emptied directory."""
    given = read_given(target)
    if given is not None:
        from vbdecl.plan.compile import compile_file
        from vbdecl.plan.saved import plan_of

        name, data = given
        saved = saved_plan_in(data, name)
        if saved is not None:
            return [Source(plan_of(saved), saved, name)]
        return [Source(plan, None, name) for plan in pin_file_sources(compile_file(name, data=data))]
    path = Path(target)
    if not path.exists():
        raise UsageError(f"{target}: no such file or directory",
                         hint="give a manifest, a saved plan, or a directory of manifests")
    if path.is_dir():
        files = manifest_files([target])
        if not files and not allow_empty:
            raise no_manifests(target)
        out = []
        for f in files:
            out += [Source(plan, None, f) for plan in pin_file_sources(compile_manifest(Path(f)))]
        return out
    saved = is_saved_plan(path)
    if saved is not None:
        from vbdecl.plan.saved import plan_of

        plan = plan_of(saved)
        return [Source(plan, saved, str(path))]
    return [Source(plan, None, str(path)) for plan in pin_file_sources(compile_manifest(path))]


"""Load manifests: YAML with positions -> validated :class:`Environment` objects.

Every problem of a file is collected (syntax problems stop the file) and
reported at once as a :class:`~vbdecl.errors.ManifestError` whose
``problems`` each say ``file:line:col: message`` plus a hint.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from vbdecl.errors import ManifestError, Problem
from vbdecl.model import manifest as m
from vbdecl.model import units
from vbdecl.model.yamlsafe import Document, Path, Positions, read_documents

__all__ = ["LoadResult", "duplicate_names", "key_where", "load_file", "load_path", "load_text", "name_where"]


class LoadResult:
    """Everything learnt from one file: the environments that validated, and all problems."""

    __slots__ = ("documents", "environments", "path", "problems")

    def __init__(self, path: str) -> None:
        self.path = path
        self.environments: list[tuple[int, m.Environment]] = []  # (document index, env)
        self.documents = 0
        self.problems: list[Problem] = []

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_for_problems(self) -> None:
        if self.problems:
            first = self.problems[0]
            raise ManifestError(first.message, hint=first.hint, where=first.where, problems=self.problems)


def _typename(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def _article(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict | list):
        return _article(_typename(value))
    text = repr(value) if isinstance(value, str) else ("null" if value is None else str(value).lower()
                                                       if isinstance(value, bool) else str(value))
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{_typename(value)} {text}"


# --- finding the model class behind an error location (for "did you mean") ----------------


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _tags(tp: Any) -> dict[str, Any]:
    """For a tagged union: tag -> member type."""
    out: dict[str, Any] = {}
    for member in typing.get_args(_unwrap(tp)):
        if typing.get_origin(member) is typing.Annotated:
            for meta in typing.get_args(member)[1:]:
                tag = getattr(meta, "tag", None)
                if isinstance(tag, str):
                    out[tag] = typing.get_args(member)[0]
    return out


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _step(tp: Any, elem: str | int) -> Any:
    tp = _unwrap(tp)
    if _is_union(tp):
        tags = _tags(tp)
        if isinstance(elem, str) and elem in tags:
            return tags[elem]
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        for member in members:
            got = _step(member, elem)
            if got is not None:
                return got
        return None
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(str(elem))
        return field.annotation if field else None
    origin = typing.get_origin(tp)
    if origin is list and isinstance(elem, int):
        return typing.get_args(tp)[0]
    if origin is dict:
        return typing.get_args(tp)[1]
    return None


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    tp: Any = m.Environment
    for elem in loc:
        tp = _step(tp, elem)
        if tp is None:
            return None
    tp = _unwrap(tp)
    if _is_union(tp):
        models = [a for a in typing.get_args(tp) if isinstance(_unwrap(a), type)
                  and issubclass(_unwrap(a), BaseModel)]
        tp = _unwrap(models[0]) if len(models) == 1 else None
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


#: hints for keys people write on entries that do not take them: what to write instead
_READ_ONLY_KEYS = ("readonly", "read_only", "ro", "read-only")
_KEY_HINTS: dict[tuple[str, str], str] = {
    **{("BindEntry", k): "a read-only bind is its own type: write type: ro-bind (without "
       f"{k})" for k in _READ_ONLY_KEYS},
    **{("DevBindEntry", k): "a dev-bind is writable: for a read-only one add a remount-ro "
       "entry with the same target after it" for k in _READ_ONLY_KEYS},
    **{("RoBindEntry", k): f"a ro-bind is read-only already: drop {k} (type: bind is the "
       "writable one)" for k in _READ_ONLY_KEYS},
}


def _unknown_key_hint(model: type[BaseModel] | None, key: str) -> str | None:
    if model is None:
        return None
    special = _KEY_HINTS.get((model.__name__, key))
    if special is not None:
        return special
    fields = [f for f in model.model_fields if f != "type"] if "type" in model.model_fields else list(model.model_fields)
    hint = m.did_you_mean(key, fields)
    if hint:
        return hint
    # A key put one level too high: spec.command belongs to spec.process.
    nested: dict[str, str] = {}
    for name, field in model.model_fields.items():
        sub = _unwrap(field.annotation)
        if _is_union(sub):
            subs = [_unwrap(a) for a in typing.get_args(sub)]
            sub = next((a for a in subs if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            for child in sub.model_fields:
                nested.setdefault(child, name)
    close = difflib.get_close_matches(key, list(nested), n=1, cutoff=0.75)
    if close:
        parent = nested[close[0]]
        return f"did you mean {parent}.{close[0]}? write {parent}: {{{close[0]}: ...}}"
    return "allowed keys: " + ", ".join(fields)


# --- pydantic errors -> problems ----------------------------------------------------------


def _locate(data: Any, loc: tuple[str | int, ...]) -> tuple[Path, tuple[str | int, ...]]:
    """Walk ``loc`` through ``data``: the existing path, and what is left (a missing key)."""
    path: list[str | int] = []
    cur = data
    rest = list(loc)
    while rest:
        elem = rest[0]
        if isinstance(cur, dict):
            if len(rest) > 1 and cur.get("type") == elem:  # a discriminated union's tag
                rest.pop(0)
                continue
            if elem in cur:
                path.append(elem)
                cur = cur[elem]
                rest.pop(0)
                continue
            if len(rest) > 1:  # a union tag such as '{join}'
                rest.pop(0)
                continue
            break
        if isinstance(cur, list) and isinstance(elem, int) and 0 <= elem < len(cur):
            path.append(elem)
            cur = cur[elem]
            rest.pop(0)
            continue
        if len(rest) > 1 and isinstance(elem, str):
            rest.pop(0)
            continue
        break
    return tuple(path), tuple(rest)


def _where(file: str, positions: Positions, path: Path, *, key: bool, doc: Document) -> str:
    p = path
    while p not in positions and p:
        p = p[:-1]
    pos = positions.get(p)
    if pos is None:
        return f"{file}:{doc.line}:1"
    line, col = (pos[0], pos[1]) if key else (pos[2], pos[3])
    return f"{file}:{line}:{col}"


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for elem in path:
        out += f"[{elem}]" if isinstance(elem, int) else (f".{elem}" if out else str(elem))
    return out


_MISSING_HINTS = {
    "metadata": "add metadata: {name: my-env}",
    "name": "add name: my-env (lower-case letters, digits and '-')",
    "apiVersion": f"add apiVersion: {m.API_VERSION}",
    "kind": f"add kind: {m.KIND}",
    "target": "add target: /path (where it goes inside the environment, absolute)",
    "source": "add source: /host/path (relative paths are to the manifest's directory)",
    "content": 'add content: "text" (the file\'s whole content)',
    "points_to": "add points_to: what the link points to, e.g. usr/bin",
    "mode": 'add mode: "0755" (octal digits, quoted)',
    "lower": "add lower: [/host/dir, ...] (the overlay's lower directories, top first)",
    "host": 'add host: PORT, or write the port as "HOST:CONTAINER[/tcp|udp]"',
    "container": 'add container: PORT, or write the port as "HOST:CONTAINER[/tcp|udp]"',
    "join": "add join: /proc/PID/ns/KIND or a pinned namespace file, or write true or false",
    "inside": "write an id map item as {inside: 0, outside: 1000, count: 1}",
    "outside": "write an id map item as {inside: 0, outside: 1000, count: 1}",
    "profile": "add profile: ./p.json (an OCI seccomp profile; relative to the manifest's directory)",
    "allow": "add allow: [read, write, ...] (the calls allowed; every other fails)",
    "deny": "add deny: [ptrace, ...] (the calls refused; every other is allowed)",
}


def _node(data: Any, path: Path) -> Any:
    for elem in path:
        data = data[elem]
    return data


def _error_to_problem(err: Any, doc: Document, file: str) -> Problem:
    etype: str = err["type"]
    loc: tuple[str | int, ...] = tuple(err["loc"])
    ctx: dict[str, Any] = err.get("ctx") or {}
    value = err.get("input")
    if etype == "vbdecl" and ctx.get("at"):
        loc = loc + tuple(ctx["at"])
    key_error = False
    if loc and loc[-1] == "[key]":
        loc = loc[:-1]
        key_error = True
    path, rest = _locate(doc.data, loc)
    at_key = key_error
    field = _dotted(tuple(x for x in loc if not (isinstance(x, str) and x.startswith("{"))))
    hint: str | None = None
    if etype == "vbdecl":
        message = str(ctx.get("message") or err["msg"])
        hint = ctx.get("hint")
        if ctx.get("at"):
            at_key = True
        written = doc.literals.get(path)
        if written is not None and loc[-1] == "mode" and type(value) is int:
            # the validator saw the number; the file says how it was written (0o644 is 420)
            bare = units.bare_mode_error(value, written)
            message, hint = bare.message, bare.hint
    elif etype == "missing":
        name = rest[-1] if rest else loc[-1]
        parent = _dotted(path) or "the document"
        entry = _node(doc.data, path)
        if isinstance(entry, dict) and isinstance(entry.get("type"), str):
            parent += f" (a {entry['type']} entry)"
        message = f"missing required key {name!r} in {parent}"
        hint = _MISSING_HINTS.get(str(name))
    elif etype == "extra_forbidden":
        key = str(loc[-1])
        message = f"unknown key {key!r}" + (f" in {_dotted(path[:-1])}" if len(path) > 1 else "")
        hint = _unknown_key_hint(_model_at(loc[:-1]), key)
        at_key = True
    elif etype == "literal_error":
        expected = ctx.get("expected", "")
        if loc == ("apiVersion",):
            message = f"unsupported apiVersion {value!r}; this vbdecl reads {m.API_VERSION}"
            hint = f"write apiVersion: {m.API_VERSION}"
        elif loc == ("kind",):
            message = f"unsupported kind {value!r}; expected {m.KIND}"
            hint = f"write kind: {m.KIND}"
        else:
            message = f"{field}: expected {expected}, got {_show(value)}"
            choices = [c.strip().strip("'") for c in expected.replace(" or ", ",").split(",") if c.strip()]
            hint = m.did_you_mean(str(value), choices) if isinstance(value, str) else None
    elif etype in ("string_type", "str_type"):
        message = f"{field}: expected a string, got {_show(value)}"
        if isinstance(value, bool | int | float):
            shown = str(value).lower() if isinstance(value, bool) else str(value)
            hint = f'quote it: "{shown}" (YAML reads unquoted {shown} as {_article(_typename(value))})'
    elif etype in ("int_type", "int_parsing", "int_from_float"):
        message = f"{field}: expected an integer, got {_show(value)}"
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            hint = "remove the quotes"
    elif etype in ("float_type", "float_parsing"):
        message = f"{field}: expected a number, got {_show(value)}"
        if isinstance(value, str):
            hint = "remove the quotes, e.g. 1.5"
    elif etype in ("bool_type", "bool_parsing"):
        message = f"{field}: expected true or false, got {_show(value)}"
        hint = "write true or false (YAML 1.2 reads yes/no/on/off as strings)"
    elif etype in ("list_type", "tuple_type"):
        message = f"{field}: expected a list, got {_show(value)}"
        hint = "write a list as [a, b] or as lines starting with '- '"
    elif etype in ("dict_type", "model_type", "model_attributes_type", "dataclass_type"):
        message = f"{field or 'the document'}: expected a mapping, got {_show(value)}"
        hint = "write a mapping as key: value lines (or {key: value})"
    elif etype in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = ctx.get("ge", ctx.get("gt", ctx.get("le", ctx.get("lt"))))
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[etype]
        message = f"{field}: {value} is out of range: it must be {op} {bound}"
    elif etype == "too_short" and isinstance(value, str):
        message = f"{field}: cannot be empty"
    elif etype == "too_short":
        message = f"{field}: needs at least {ctx.get('min_length')} item(s), got {ctx.get('actual_length')}"
        if field.endswith("lower") and ctx.get("min_length") == 2:
            hint = "a read-only overlay needs two or more lower directories; for one, use ro-bind"
    elif etype == "too_long":
        message = f"{field}: at most {ctx.get('max_length')} item(s) allowed, got {ctx.get('actual_length')}"
    elif etype == "string_too_short":
        message = f"{field}: cannot be empty"
    elif etype == "finite_number":
        message = f"{field}: must be a finite number"
    else:
        message = f"{field}: {err['msg']}"
    if hint is None:
        hint = _VALUE_HINTS.get((field, "int" if etype.startswith("int_") else etype))
    where = _where(file, doc.positions, path, key=at_key, doc=doc)
    return Problem(where, message, hint)


#: hints for values people write that a key does not take, by (key, pydantic error
#: type; "int" for each int_* type)
_VALUE_HINTS: dict[tuple[str, str], str] = {
    ("spec.process.user", "int"):
        "vbdecl reads no passwd file: give a numeric uid, such as user: 0",
    ("spec.process.group", "int"):
        "vbdecl reads no group file: give a numeric gid, such as group: 0",
    ("spec.process.command", "too_short"):
        "leave process.command out for /bin/sh, or name the program: [/bin/echo, hi]",
    ("spec.limits.cpu", "greater_than_equal"):
        "cpu is in CPUs (cores), e.g. 0.5; leave it out for no limit",
}


def _doc_problems(doc: Document, file: str) -> list[Problem]:
    return [Problem(f"{file}:{line}:{col}", msg, hint) for line, col, msg, hint in doc.problems]


def _expanded(errors: list[Any]) -> list[Any]:
    """Errors with the extra problems of a :func:`~vbdecl.model.manifest.fail_all` each on its own."""
    out = []
    for e in errors:
        ctx = e.get("ctx") or {}
        out.append(e)
        out += [{**e, "ctx": more} for more in ctx.get("more") or []]
    return out


def _check_document(doc: Document, file: str) -> tuple[m.Environment | None, list[Problem]]:
    problems = _doc_problems(doc, file)
    data = doc.data
    if problems:
        return None, problems
    if data is None or data == {} or data == []:
        return None, [Problem(f"{file}:{doc.line}:1", f"document {doc.index + 1} is empty",
                              "remove the empty document (a '---' with nothing after it), or fill it in")]
    if not isinstance(data, dict):
        return None, [Problem(f"{file}:{doc.line}:1",
                              f"document {doc.index + 1} is a {_typename(data)}, not a mapping",
                              "a manifest starts with apiVersion: vbdecl/v1, kind: Environment, metadata, spec")]
    if "spec" in data and data["spec"] is None:  # `spec:` with nothing under it
        data = {**data, "spec": {}}
    try:
        env = m.Environment.model_validate(data)
    except ValidationError as err:
        out = [_error_to_problem(e, doc, file) for e in _expanded(err.errors(include_url=False))]
        return None, out
    return env, []


def _sort_key(p: Problem) -> tuple[int, int]:
    parts = p.where.rsplit(":", 2)
    try:
        return int(parts[1]), int(parts[2])
    except (IndexError, ValueError):
        return 0, 0


SAVED_PLAN_KIND = "vbdecl.saved-plan"    # vbdecl.plan.saved.KIND (the model imports no planner)


def _saved_plan_problem(docs: list[Document], file: str) -> Problem | None:
    """A file ``vbdecl plan -o`` wrote, given where a manifest belongs: one problem that
    says so, rather than one unknown key per key of the plan."""
    data = docs[0].data if len(docs) == 1 else None
    saved = data.get("saved") if isinstance(data, dict) else None
    if not isinstance(saved, dict) or saved.get("kind") != SAVED_PLAN_KIND:
        return None
    hint = f"apply it with `vbdecl apply {file}`"
    if isinstance(saved.get("file"), str):
        hint += f"; the other commands take a manifest, such as the one it was made from: {saved['file']}"
    return Problem(f"{file}:1:1", "this is a saved plan (from `vbdecl plan -o`), not a manifest", hint)


def load_path(path: str, data: bytes | None = None, *, display: str | None = None) -> LoadResult:
    """Read one file (or ``data`` under that name); never raises for bad input."""
    file = display or path
    result = LoadResult(path)
    docs, fatal = read_documents(path, data, where=file)
    result.documents = len(docs)
    saved_plan = _saved_plan_problem(docs, file)
    if saved_plan is not None:
        result.problems = [saved_plan]
        return result
    problems: list[Problem] = []
    for doc in docs:
        env, probs = _check_document(doc, file)
        problems.extend(probs)
        if env is not None:
            result.environments.append((doc.index, env))
    names: dict[str, int] = {}
    for index, name in _document_names(docs, result.environments):
        if name in names:
            doc = docs[index]
            problems.append(Problem(_where(file, doc.positions, ("metadata", "name"), key=False, doc=doc),
                                    f"environment {name!r} is defined twice in this file "
                                    f"(documents {names[name] + 1} and {index + 1})",
                                    "give each environment its own metadata.name"))
        names[name] = index
    problems.sort(key=_sort_key)
    problems.extend(fatal)
    if not docs and not fatal:
        problems.append(Problem(f"{file}:1:1", "the file has no documents (it is empty)",
                                f"a manifest needs at least apiVersion: {m.API_VERSION}, kind: {m.KIND} "
                                "and metadata: {name: ...}"))
    result.problems = problems
    return result


def _document_names(docs: list[Document], envs: list[tuple[int, m.Environment]]) -> list[tuple[int, str]]:
    """(document index, metadata.name) of each document that names an environment
    validly, also one with other problems: a name used twice is said with them, not
    only once they are mended (a review)."""
    valid = dict(envs)
    out = []
    for doc in docs:
        if doc.index in valid:
            out.append((doc.index, valid[doc.index].name))
            continue
        meta = doc.data.get("metadata") if isinstance(doc.data, dict) else None
        name = meta.get("name") if isinstance(meta, dict) else None
        if isinstance(name, str) and m.valid_name(name):
            out.append((doc.index, name))
    return out


def name_where(file: str, document: int) -> str:
    """``file:line:col`` of the ``metadata.name`` of document ``document`` (0-based) of ``file``."""
    return key_where(file, document, ("metadata", "name"))


def key_where(file: str, document: int, path: Path) -> str:
    """``file:line:col`` of the value at ``path`` (or of the nearest key above it that
    the file has) in document ``document`` (0-based) of ``file``: for what plan finds
    wrong with a manifest after validation (what a live environment cannot have)."""
    docs, _fatal = read_documents(file, None, where=file)
    if document >= len(docs):
        return f"{file}:1:1"
    doc = docs[document]
    return _where(file, doc.positions, path, key=False, doc=doc)


def duplicate_names(envs: list[tuple[str, str, int]]) -> dict[str, list[Problem]]:
    """Environment names that more than one file uses, among ``envs``: ``(name, file,
    document index)`` of each environment one command reads (validate, plan or apply of
    several files or a DIR). The problems, by file: one at each file's first use of such
    a name, that names the other files'. Within one file, :func:`load_path` reports a
    name used twice."""
    # each file's first use of each name (a file given twice is one file; a file's own
    # second use load_path says, once)
    firsts: dict[str, dict[str, tuple[str, int]]] = {}
    for name, file, document in envs:
        firsts.setdefault(name, {}).setdefault(os.path.realpath(file), (file, document))
    out: dict[str, list[Problem]] = {}
    for name, by_file in firsts.items():
        if len(by_file) < 2:
            continue
        uses = list(by_file.values())
        wheres = [name_where(file, document) for file, document in uses]
        for (file, _document), where in zip(uses, wheres, strict=True):
            others = ", ".join(w for w in wheres if w != where)
            out.setdefault(file, []).append(Problem(
                where, f"environment name {name!r} is also used at {others}",
                "give each environment its own metadata.name: one name is one environment"))
    return out


def load_text(text: str | bytes, path: str = "<string>") -> list[m.Environment]:
    """Environments from text (raises ManifestError with every problem)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    result = load_path(path, data)
    result.raise_for_problems()
    return [env for _i, env in result.environments]


def load_file(path: str | os.PathLike[str]) -> list[m.Environment]:
    """Every environment of the file; raises ManifestError listing all problems."""
    result = load_path(os.fspath(path))
    result.raise_for_problems()
    return [env for _i, env in result.environments]

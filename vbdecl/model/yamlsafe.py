"""YAML to plain data, with positions, duplicate-key checks and bomb defences.

The text is composed into a node graph by libyaml (PyYAML's C composer, fast)
or, where libyaml is missing or ``VBDECL_YAML=ruamel``, by ruamel.yaml's pure
Python composer. Both give nodes with marks; this module turns them into plain
data itself, so that:

- scalars resolve by the YAML 1.2 core schema whatever the composer
  (``0755`` is the integer 755, ``yes`` is a string);
- duplicate keys, recursive aliases, unsupported tags are located problems;
- alias expansion is counted: a "billion laughs" file stops at
  :data:`MAX_NODES` nodes, in bounded memory, within milliseconds;
- every key and list item gets a position (line, column, 1-based) by path;
- an integer written other than in plain decimal (``0o644``) keeps its text by
  path, for messages about it.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

from vbdecl.errors import Problem

MAX_BYTES = 8 * 1024 * 1024
MAX_NODES = 100_000
MAX_DEPTH = 64

Path = tuple[str | int, ...]
# path -> (key line, key col, value line, value col); all 1-based
Positions = dict[Path, tuple[int, int, int, int]]

_NULL = {"", "~", "null", "Null", "NULL"}
_TRUE = {"true", "True", "TRUE"}
_FALSE = {"false", "False", "FALSE"}
_INT = re.compile(r"[-+]?[0-9]+")
_OCT = re.compile(r"0o[0-7]+")
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_INF = re.compile(r"[-+]?\.(inf|Inf|INF)")
_NAN = re.compile(r"\.(nan|NaN|NAN)")

T = "tag:yaml.org,2002:"


class YamlProblem(Exception):
    """Stops reading a document (a syntax error, too many nodes)."""

    def __init__(self, line: int, col: int, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.line, self.col, self.message, self.hint = line, col, message, hint


def resolve_plain(value: str) -> Any:
    """A plain scalar by the YAML 1.2 core schema."""
    if value in _NULL:
        return None
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    if _INT.fullmatch(value):
        return int(value)
    if _OCT.fullmatch(value):
        return int(value[2:], 8)
    if _HEX.fullmatch(value):
        return int(value[2:], 16)
    if _FLOAT.fullmatch(value):
        return float(value)
    if _INF.fullmatch(value):
        return -math.inf if value.startswith("-") else math.inf
    if _NAN.fullmatch(value):
        return math.nan
    return value


def _explicit(tag: str, value: str, node: Any) -> Any:
    line, col = node.start_mark.line + 1, node.start_mark.column + 1
    try:
        if tag == T + "str":
            return value
        if tag == T + "null":
            return None
        if tag == T + "bool":
            r = resolve_plain(value)
            if isinstance(r, bool):
                return r
        elif tag == T + "int":
            r = resolve_plain(value)
            if isinstance(r, int) and not isinstance(r, bool):
                return r
        elif tag == T + "float":
            r = resolve_plain(value)
            if isinstance(r, int | float) and not isinstance(r, bool):
                return float(r)
        else:
            raise YamlProblem(line, col, f"unsupported YAML tag {tag.replace(T, '!!')}",
                              "vbdecl reads plain YAML: remove the tag")
    except ValueError:
        pass
    raise YamlProblem(line, col, f"{value!r} is not a valid {tag.replace(T, '!!')}")


class Builder:
    """Turns one document's node graph into plain data and positions."""

    def __init__(self, implicit_tag: Callable[[str], str]) -> None:
        self.implicit_tag = implicit_tag
        self.positions: Positions = {}
        self.literals: dict[Path, str] = {}     # path -> the text of an int not in plain decimal
        self.problems: list[tuple[int, int, str, str | None]] = []
        self.count = 0

    def build(self, node: Any) -> Any:
        self.count = 0
        m = node.start_mark
        self.positions[()] = (m.line + 1, m.column + 1, m.line + 1, m.column + 1)
        return self._node(node, (), set(), 0)

    def _node(self, node: Any, path: Path, active: set[int], depth: int) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            m = node.start_mark
            raise YamlProblem(m.line + 1, m.column + 1,
                              f"the document expands to more than {MAX_NODES} nodes (alias bomb?)",
                              "a manifest this large is not supported; check for nested aliases (*name)")
        if depth > MAX_DEPTH:
            m = node.start_mark
            raise YamlProblem(m.line + 1, m.column + 1, f"the document nests deeper than {MAX_DEPTH} levels")
        kind = node.id
        if kind == "scalar":
            value: str = node.value
            tag: str = node.tag
            if node.style is None or node.style == "":
                if tag == self.implicit_tag(value) or tag == "!":
                    plain = resolve_plain(value)
                    if type(plain) is int and value != str(plain):
                        self.literals[path] = value
                    return plain
                return _explicit(tag, value, node)
            if tag in (T + "str", "!"):
                return value
            return _explicit(tag, value, node)
        key = id(node)
        if key in active:
            m = node.start_mark
            raise YamlProblem(m.line + 1, m.column + 1, "recursive alias: a node contains itself",
                              "remove the alias (*name) that refers to its own anchor")
        active.add(key)
        try:
            if kind == "sequence":
                if node.tag not in (T + "seq", "!"):
                    m = node.start_mark
                    raise YamlProblem(m.line + 1, m.column + 1, f"unsupported YAML tag {node.tag}",
                                      "remove the tag")
                out: list[Any] = []
                for i, item in enumerate(node.value):
                    p = (*path, i)
                    im = item.start_mark
                    self.positions[p] = (im.line + 1, im.column + 1, im.line + 1, im.column + 1)
                    out.append(self._node(item, p, active, depth + 1))
                return out
            if node.tag not in (T + "map", "!"):
                m = node.start_mark
                raise YamlProblem(m.line + 1, m.column + 1, f"unsupported YAML tag {node.tag}", "remove the tag")
            return self._mapping(node, path, active, depth)
        finally:
            active.discard(key)

    def _mapping(self, node: Any, path: Path, active: set[int], depth: int) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        merges: list[Any] = []
        for knode, vnode in node.value:
            km = knode.start_mark
            if knode.id != "scalar":
                self.problems.append((km.line + 1, km.column + 1, "a mapping key must be a plain scalar",
                                      "write keys as plain words"))
                continue
            if knode.tag == T + "merge" and knode.value == "<<":
                merges.append(vnode)
                continue
            k = self._node(knode, (*path, "<key>"), active, depth + 1)
            if not isinstance(k, str):
                desc = ("null" if k is None else "a boolean" if isinstance(k, bool)
                        else "an integer" if isinstance(k, int) else "a number" if isinstance(k, float)
                        else "a " + type(k).__name__)
                self.problems.append((km.line + 1, km.column + 1,
                                      f"mapping key {knode.value!r} is read as {desc}; keys must be strings",
                                      f'quote it: "{knode.value}"' if isinstance(knode.value, str) and knode.value
                                      else "give the key a name"))
                continue
            p = (*path, k)
            if k in out:
                first = self.positions.get(p, (0, 0, 0, 0))
                self.problems.append((km.line + 1, km.column + 1,
                                      f"duplicate key {k!r} (first at line {first[0]})",
                                      "remove one of them: YAML keys must be unique in a mapping"))
                continue
            vm = vnode.start_mark
            self.positions[p] = (km.line + 1, km.column + 1, vm.line + 1, vm.column + 1)
            out[k] = self._node(vnode, p, active, depth + 1)
        for mnode in merges:
            sources = mnode.value if mnode.id == "sequence" else [mnode]
            for src in sources:
                if src.id != "mapping":
                    m = src.start_mark
                    self.problems.append((m.line + 1, m.column + 1, "a merge (<<) needs a mapping", None))
                    continue
                merged = self._mapping(src, path, active, depth + 1)
                for k, v in merged.items():
                    out.setdefault(k, v)
        return out


# --- reading the file ---------------------------------------------------------------------


def _line_col(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    col = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, col


def read_text(path: str, data: bytes | None = None) -> str:
    """The file's text, or YamlProblem for too large, NUL bytes, non-UTF-8."""
    if data is None:
        try:
            st = os.stat(path)
        except OSError as err:
            raise YamlProblem(0, 0, f"cannot read the file: {err.strerror}",
                              "check the path" if err.errno == 2 else None) from None
        if os.path.isdir(path):
            raise YamlProblem(0, 0, "is a directory", "pass a manifest file, or use vbdecl validate DIR")
        if st.st_size > MAX_BYTES:
            raise YamlProblem(1, 1, f"the file is {st.st_size} bytes; the limit is {MAX_BYTES // (1024 * 1024)} MiB",
                              "split it into smaller manifests")
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_BYTES + 1)
        except OSError as err:
            raise YamlProblem(0, 0, f"cannot read the file: {err.strerror}") from None
    if len(data) > MAX_BYTES:
        raise YamlProblem(1, 1, f"the input is larger than the limit of {MAX_BYTES // (1024 * 1024)} MiB",
                          "split it into smaller manifests")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise YamlProblem(1, 1, "the file is UTF-16; vbdecl reads UTF-8", "save the file as UTF-8")
    nul = data.find(b"\0")
    if nul >= 0:
        line, col = _line_col(data[:nul].decode("utf-8", "replace"), nul)
        raise YamlProblem(line, col, "the file contains a NUL byte (is it binary?)",
                          "a manifest is UTF-8 text; remove the NUL byte")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        prefix = data[: err.start].decode("utf-8", "replace")
        line, col = _line_col(prefix, len(prefix))
        raise YamlProblem(line, col, f"the file is not valid UTF-8 (byte 0x{data[err.start]:02x})",
                          "save the file as UTF-8") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text


_SYNTAX_HINTS = (
    ("found character '\\t'", "YAML does not allow tabs for indentation: use spaces"),
    ("mapping values are not allowed", "check the indentation; a value with ': ' in it must be quoted"),
    ("could not find expected ':'", "a key needs ': ' after it; check the indentation and quotes"),
    ("did not find expected key", "check the indentation of this line against the keys above it"),
    ("did not find expected '-' indicator", "list items must line up: check the indentation"),
    ("found undefined alias", "define the anchor (&name) before using the alias (*name)"),
    ("found unexpected end of stream", "a quote or bracket is not closed"),
    ("found unknown escape character", "in double quotes a backslash starts an escape; use single quotes"),
    ("expected <block end>", "check the indentation of this line"),
    ("while scanning a quoted scalar", "a quote is not closed"),
)


def _syntax_hint(text: str, source: str = "", line: int = 0) -> str:
    lines = source.split("\n", line + 1)[: line + 1] if source else []
    if lines and "\t" in lines[-1] and ("token" in text or "\\t" in text):
        return "YAML does not allow tabs for indentation: use spaces"
    for needle, hint in _SYNTAX_HINTS:
        if needle in text:
            return hint
    return "check the indentation, quotes and brackets near here"


def _libyaml_nodes(text: str) -> Iterator[tuple[Any, Callable[[str], str]]]:
    import yaml

    loader = yaml.CSafeLoader(text)
    cache: dict[str, str] = {}

    def implicit(value: str) -> str:
        tag = cache.get(value)
        if tag is None:
            tag = loader.resolve(yaml.ScalarNode, value, (True, False))
            if len(cache) < 4096:
                cache[value] = tag
        return tag

    try:
        while loader.check_node():
            yield loader.get_node(), implicit
    except yaml.MarkedYAMLError as err:
        raise _syntax_problem(err, text) from None
    except yaml.YAMLError as err:
        raise YamlProblem(1, 1, f"YAML error: {err}", None) from None
    finally:
        loader.dispose()


def _syntax_problem(err: Any, text: str) -> YamlProblem:
    """A syntax error of either parser (PyYAML's or ruamel's MarkedYAMLError), where
    to look: a bracket or quote left open is reported where it opens (the parser
    notices only at the next line, or at the end of the file), else where the
    parser stopped."""
    mark, context = err.problem_mark or err.context_mark, err.context_mark
    msg = " ".join(s for s in (err.context, err.problem) if s)
    if mark is not None and context is not None and context.line < mark.line \
            and any(what in (err.context or "") for what in ("flow", "quoted scalar")):
        msg = f"{err.context} that starts here: {err.problem} (line {mark.line + 1}, column {mark.column + 1})"
        mark = context
    return YamlProblem(mark.line + 1 if mark else 1, mark.column + 1 if mark else 1,
                       f"YAML syntax error: {msg}", _syntax_hint(msg, text, mark.line if mark else 0))


def _ruamel_nodes(text: str) -> Iterator[tuple[Any, Callable[[str], str]]]:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError
    from ruamel.yaml.nodes import ScalarNode

    yaml = YAML(typ="safe", pure=True)
    yaml.allow_duplicate_keys = True  # we report duplicates ourselves, all of them
    _constructor, parser = yaml.get_constructor_parser(text)
    composer = yaml.composer
    resolver = yaml.resolver

    def implicit(value: str) -> str:
        return str(resolver.resolve(ScalarNode, value, (True, False)))

    try:
        while composer.check_node():
            yield composer.get_node(), implicit
    except MarkedYAMLError as err:
        raise _syntax_problem(err, text) from None
    except YAMLError as err:
        raise YamlProblem(1, 1, f"YAML error: {err}", None) from None
    except (IndexError, KeyError, AttributeError, TypeError) as err:
        # ruamel's own failures on some input (a %YAML directive: IndexError in 0.18)
        raise YamlProblem(1, 1, f"YAML error: the parser failed on this file ({type(err).__name__}: {err})",
                          "check the file's directives (%YAML, %TAG) and its first lines") from None
    finally:
        parser.dispose()


def _composer() -> Callable[[str], Iterator[tuple[Any, Callable[[str], str]]]]:
    if os.environ.get("VBDECL_YAML") != "ruamel":
        try:
            import yaml

            if getattr(yaml, "__with_libyaml__", False):
                return _libyaml_nodes
        except ImportError:
            pass
    return _ruamel_nodes


class Document:
    """One YAML document: its data (None if it could not be read), positions and problems."""

    __slots__ = ("data", "index", "line", "literals", "positions", "problems")

    def __init__(self, index: int, line: int) -> None:
        self.index = index
        self.line = line
        self.data: Any = None
        self.positions: Positions = {}
        self.literals: dict[Path, str] = {}
        self.problems: list[tuple[int, int, str, str | None]] = []


def read_documents(path: str, data: bytes | None = None, *, where: str | None = None,
                   ) -> tuple[list[Document], list[Problem]]:
    """Every document of the file; problems that stop the file (syntax, encoding) separately."""
    where = where or path
    docs: list[Document] = []
    try:
        text = read_text(path, data)
        for index, (node, implicit) in enumerate(_composer()(text)):
            doc = Document(index, node.start_mark.line + 1)
            builder = Builder(implicit)
            try:
                doc.data = builder.build(node)
            except YamlProblem as err:
                doc.problems.append((err.line, err.col, err.message, err.hint))
            except RecursionError:
                doc.problems.append((doc.line, 1, "the document nests too deeply", None))
            doc.positions = builder.positions
            doc.literals = builder.literals
            doc.problems[:0] = builder.problems
            docs.append(doc)
    except YamlProblem as err:
        loc = f"{where}:{err.line}:{err.col}" if err.line else where
        return docs, [Problem(loc, err.message, err.hint)]
    return docs, []

"""The console programs' finder for vbdecl's own modules (vbdecl/fastimport.py).

It must load exactly what the default machinery would: a cache that is stale,
hash-based or from another magic number is the default loader's to handle. Each
case runs in a fresh interpreter (the finder changes sys.meta_path) on a package
made for the test.
"""

from __future__ import annotations

import os
import py_compile
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = str(Path(__file__).resolve().parents[2])
TIMESTAMP = py_compile.PycInvalidationMode.TIMESTAMP


def make_package(root: Path) -> str:
    """A package with a module, a subpackage and a module in that, each with a
    timestamp-based cache next to it."""
    name = f"fipkg_{uuid.uuid4().hex[:8]}"
    files = {
        f"{name}/__init__.py": "WHAT = 'package'\n",
        f"{name}/mod.py": "WHAT = 'module'\n",
        f"{name}/sub/__init__.py": "WHAT = 'subpackage'\n",
        f"{name}/sub/leaf.py": ("from .. import mod\nWHAT = 'leaf of ' + mod.WHAT\n\n\n"
                                "def where() -> str:\n    return where.__code__.co_filename\n"),
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        py_compile.compile(str(path), doraise=True, invalidation_mode=TIMESTAMP)
    return name


def run(root: Path, body: str, *flags: str) -> str:
    code = (f"import sys\nsys.path[:0] = [{REPO!r}, {str(root)!r}]\n"
            "from vbdecl import fastimport\n" + body)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPYCACHEPREFIX", "PYTHONOPTIMIZE")}
    r = subprocess.run([sys.executable, "-I", *flags, "-c", code], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def loaders(name: str, *modules: str) -> str:
    return "".join(f"m = importlib.import_module('{name}{m}'); print(type(m.__loader__).__name__, m.WHAT)\n"
                   for m in modules)


def test_modules_come_from_the_cache_with_the_regular_attributes(tmp_path: Path) -> None:
    name = make_package(tmp_path)
    out = run(tmp_path, f"import importlib, {name}\nfastimport.install({name})\n"
              + loaders(name, ".mod", ".sub", ".sub.leaf")
              + f"import {name}.sub.leaf as leaf, {name}.sub as sub\n"
              "print(leaf.__file__); print(leaf.__cached__); print(leaf.__spec__.origin)\n"
              "print(sub.__path__, sub.__package__, leaf.__package__)\n")
    lines = out.splitlines()
    assert lines[:3] == ["CachedSourceLoader module", "CachedSourceLoader subpackage", "CachedSourceLoader leaf of module"]
    leaf = tmp_path / name / "sub" / "leaf.py"
    assert lines[3] == str(leaf)
    assert lines[4] == str(leaf.parent / "__pycache__" / f"leaf.{sys.implementation.cache_tag}.pyc")
    assert lines[5] == str(leaf)
    assert lines[6] == f"[{str(leaf.parent)!r}] {name}.sub {name}.sub"


def test_a_stale_cache_is_left_to_the_default_loader(tmp_path: Path) -> None:
    name = make_package(tmp_path)
    (tmp_path / name / "mod.py").write_text("WHAT = 'edited module'\n")   # size differs
    out = run(tmp_path, f"import importlib, {name}\nfastimport.install({name})\n" + loaders(name, ".mod"))
    assert out == "SourceFileLoader edited module\n"


def test_a_cache_with_the_same_size_and_an_older_mtime_is_stale(tmp_path: Path) -> None:
    name = make_package(tmp_path)
    source = tmp_path / name / "mod.py"
    source.write_text("WHAT = 'MODULE'\n")                                # same size
    st = source.stat()
    os.utime(source, (st.st_atime, st.st_mtime + 5))
    out = run(tmp_path, f"import importlib, {name}\nfastimport.install({name})\n" + loaders(name, ".mod"))
    assert out == "SourceFileLoader MODULE\n"


@pytest.mark.parametrize("patch", ["hash-based", "magic"])
def test_caches_it_does_not_check_are_left_to_the_default_loader(tmp_path: Path, patch: str) -> None:
    name = make_package(tmp_path)
    source = tmp_path / name / "mod.py"
    if patch == "hash-based":
        py_compile.compile(str(source), doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
    else:
        cached = source.parent / "__pycache__" / f"mod.{sys.implementation.cache_tag}.pyc"
        data = bytearray(cached.read_bytes())
        data[0] ^= 0xFF
        cached.write_bytes(bytes(data))
    out = run(tmp_path, f"import importlib, {name}\nfastimport.install({name})\n" + loaders(name, ".mod"))
    assert out == "SourceFileLoader module\n"


def test_a_cache_cut_short_is_left_to_the_default_loader(tmp_path: Path) -> None:
    """12 bytes, without the source size: an empty source's size (0) must not match it."""
    name = make_package(tmp_path)
    source = tmp_path / name / "empty.py"
    source.write_text("")
    py_compile.compile(str(source), doraise=True, invalidation_mode=TIMESTAMP)
    cached = source.parent / "__pycache__" / f"empty.{sys.implementation.cache_tag}.pyc"
    cached.write_bytes(cached.read_bytes()[:12])
    out = run(tmp_path, f"import {name}\nfastimport.install({name})\nimport {name}.empty as m\n"
              "print(type(m.__loader__).__name__)\n")
    assert out == "SourceFileLoader\n"


def test_a_reload_reads_the_source_again(tmp_path: Path) -> None:
    name = make_package(tmp_path)
    out = run(tmp_path, f"import importlib, {name}\nfastimport.install({name})\n" + loaders(name, ".mod")
              + f"open({str(tmp_path / name / 'mod.py')!r}, 'w').write(\"WHAT = 'reloaded'\\n\")\n"
              f"print(importlib.reload(sys.modules['{name}.mod']).WHAT)\n")
    assert out == "CachedSourceLoader module\nreloaded\n"


@pytest.mark.parametrize("flags", [["-O"], ["-X", "pycache_prefix={root}/elsewhere"]])
def test_caches_where_the_interpreter_keeps_them(tmp_path: Path, flags: list[str]) -> None:
    name = make_package(tmp_path)
    flags = [flag.format(root=tmp_path) for flag in flags]
    compile_all = f"import compileall; compileall.compile_dir({str(tmp_path / name)!r}, quiet=1)\n"
    out = run(tmp_path, compile_all + f"import importlib, {name}\nfastimport.install({name})\n"
              + loaders(name, ".mod") + f"print(sys.modules['{name}.mod'].__cached__)\n", *flags)
    loader, cached = out.splitlines()
    assert loader == "CachedSourceLoader module"
    if flags == ["-O"]:
        assert cached.endswith(f"/__pycache__/mod.{sys.implementation.cache_tag}.opt-1.pyc")
    else:
        assert cached.startswith(f"{tmp_path}/elsewhere/")


def test_the_cache_is_where_the_default_loader_keeps_it() -> None:
    from importlib.util import cache_from_source

    from vbdecl.fastimport import PackageFinder

    finder = PackageFinder("vbdecl", f"{REPO}/vbdecl")
    sources = [str(p) for p in (Path(REPO) / "vbdecl").rglob("*.py")]
    assert sources and [finder.cache_of(s) for s in sources] == [cache_from_source(s) for s in sources]


def test_installed_once(tmp_path: Path) -> None:
    name = make_package(tmp_path)
    count = "print(sum(isinstance(f, fastimport.PackageFinder) for f in sys.meta_path))\n"
    body = f"import {name}\nfastimport.install({name})\nfastimport.install({name})\n" + count
    assert run(tmp_path, body) == "1\n"


def test_the_console_programs_load_vbdecl_through_it() -> None:
    """vb's run path (and run, exec) comes from the finder wherever the caches are current."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", f"{REPO}/vbdecl"], check=True, timeout=120)
    code = ("import sys\nfrom vbdecl.entry import _fast_imports\n_fast_imports()\n"
            "import vbdecl.runtime.spawn as s, vbdecl.vb.parse as p\n"
            "print(type(s.__loader__).__name__, type(p.__loader__).__name__)\n")
    r = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {REPO!r})\n" + code],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "CachedSourceLoader CachedSourceLoader\n"


def test_a_copied_tree_names_its_own_files(tmp_path: Path) -> None:
    """Caches copied along with their sources (cp -a, a restored CI cache) name the
    files they were compiled from: the code is given the source's path as it is now,
    as the default loader does, for tracebacks and linecache."""
    name = make_package(tmp_path / "a")
    shutil.copytree(tmp_path / "a" / name, tmp_path / "b" / name)
    out = run(tmp_path / "b", f"import importlib, {name}\nfastimport.install({name})\n"
              + loaders(name, ".sub.leaf") + f"print(sys.modules['{name}.sub.leaf'].where())\n")
    assert out.splitlines() == ["CachedSourceLoader leaf of module", str(tmp_path / "b" / name / "sub" / "leaf.py")]


def test_resources_and_source_come_from_the_default_loader(tmp_path: Path) -> None:
    name = make_package(tmp_path)
    (tmp_path / name / "sub" / "data.txt").write_text("payload")
    out = run(tmp_path, f"import importlib.resources, pkgutil, inspect, {name}\nfastimport.install({name})\n"
              + loaders(name, ".sub.leaf")
              + f"print((importlib.resources.files('{name}.sub') / 'data.txt').read_text())\n"
              f"print(pkgutil.get_data('{name}.sub', 'data.txt'))\n"
              f"print(repr(inspect.getsource(sys.modules['{name}.sub.leaf']).splitlines()[-1]))\n")
    assert out.splitlines() == ["CachedSourceLoader leaf of module", "payload", "b'payload'",
                                repr("    return where.__code__.co_filename")]


def test_no_extension_module_beside_a_source_module_of_its_name() -> None:
    """The one layout where this finder (source first) and the default one (extension
    first) would load different modules."""
    package = Path(REPO) / "vbdecl"
    sources = {p.with_suffix("") for p in package.rglob("*.py")}
    extensions = {p.parent / p.name.split(".", 1)[0] for p in package.rglob("*.so")}
    assert sources & extensions == set()


def test_no_module_beside_a_package_of_its_name() -> None:
    """The other one: this finder looks for a module first, the default one for a package."""
    package = Path(REPO) / "vbdecl"
    modules = {p.with_suffix("") for p in package.rglob("*.py") if p.name != "__init__.py"}
    packages = {p.parent for p in package.rglob("__init__.py")}
    assert packages and modules & packages == set()

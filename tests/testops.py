"""Ops used only by tests: real files, directories and tmpfs mounts under a
test directory, so the engine can be tested with plans of any size without
waiting for the other families.

Kinds: ``test.dir``, ``test.file``, ``test.mount`` (tmpfs; updatable size),
``test.slow`` (sleeps; for lock tests). Every object is tagged with the
instance id, and ``probe(params, None)`` reports only objects that carry it.

Run as a script it is ``vbdecl`` with these ops registered:
``python tests/testops.py apply plan.json -y --state-dir D``.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

_libc = ctypes.CDLL(None, use_errno=True)
MS_REMOUNT = 32
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
CLONE_NEWNS = 0x00020000


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _owner_tag(instance: str) -> str:
    return f"vbdecl-test-{instance}"


def _dir_marker(path: Path) -> Path:
    # Beside the directory, not in it: a mount on the directory would hide it.
    return path.with_name(f".{path.name}.owner")


class DirOp:
    def describe(self, params: dict[str, Any]) -> str:
        return f"dir {params['path']}"

    def probe(self, ctx: Any, params: dict[str, Any], record: dict[str, Any] | None) -> dict[str, Any] | None:
        path = Path(params["path"])
        marker = _dir_marker(path)
        try:
            if marker.read_text() != ctx.instance or not path.is_dir():
                return None
        except OSError:
            return None
        return {"path": str(path), "owner": ctx.instance}

    def apply(self, ctx: Any, params: dict[str, Any]) -> dict[str, Any]:
        path = Path(params["path"])
        path.mkdir()  # a foreign directory in the way is an error, never adopted
        _dir_marker(path).write_text(ctx.instance)
        return {"path": str(path), "owner": ctx.instance}

    def revert(self, ctx: Any, record: dict[str, Any]) -> None:
        path = Path(record["path"])
        marker = _dir_marker(path)
        try:
            if marker.read_text() != record["owner"]:
                return
        except OSError:
            return
        try:
            path.rmdir()
        except FileNotFoundError:
            pass
        marker.unlink()


class FileOp:
    no_update = False

    def describe(self, params: dict[str, Any]) -> str:
        return f"file {params['path']}"

    def _read(self, path: Path) -> tuple[str, str] | None:
        try:
            text = path.read_text()
        except OSError:
            return None
        owner, _, content = text.partition("\n")
        return owner, content

    def probe(self, ctx: Any, params: dict[str, Any], record: dict[str, Any] | None) -> dict[str, Any] | None:
        got = self._read(Path(params["path"]))
        if got is None or got[0] != _owner_tag(ctx.instance):
            return None
        return {"path": params["path"], "owner": ctx.instance, "content": got[1]}

    def apply(self, ctx: Any, params: dict[str, Any]) -> dict[str, Any]:
        path = Path(params["path"])
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(_owner_tag(ctx.instance) + "\n" + params["content"])
        return {"path": str(path), "owner": ctx.instance, "content": params["content"]}

    def update(self, ctx: Any, params: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
        path = Path(record["path"])
        got = self._read(path)
        if got is None or got[0] != _owner_tag(record["owner"]):
            return self.apply(ctx, params)
        path.write_text(_owner_tag(ctx.instance) + "\n" + params["content"])
        return {"path": str(path), "owner": ctx.instance, "content": params["content"]}

    def revert(self, ctx: Any, record: dict[str, Any]) -> None:
        path = Path(record["path"])
        got = self._read(path)
        if got is None or got[0] != _owner_tag(record["owner"]):
            return
        path.unlink()


class HalfRevertOp(FileOp):
    """A file whose revert resets its content, then fails before removing it (a
    revert interrupted half-way, as a limit reset whose directory is still there)."""

    undo_by_update = True

    def revert(self, ctx: Any, record: dict[str, Any]) -> None:
        Path(record["path"]).write_text(_owner_tag(record["owner"]) + "\nreset")
        raise OSError(5, "failed half-way")


def mounts_at(path: str) -> list[tuple[str, str]]:
    """(fstype, source) of every mount at ``path`` in this mount namespace."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        parts = line.split()
        sep = parts.index("-")
        if parts[4] == path:
            out.append((parts[sep + 1], parts[sep + 2]))
    return out


class MountOp:
    def describe(self, params: dict[str, Any]) -> str:
        return f"tmpfs {params['path']} size={params['size']}"

    def probe(self, ctx: Any, params: dict[str, Any], record: dict[str, Any] | None) -> dict[str, Any] | None:
        tag = _owner_tag(ctx.instance)
        if ("tmpfs", tag) not in mounts_at(params["path"]):
            return None
        return {"path": params["path"], "source": tag}

    def apply(self, ctx: Any, params: dict[str, Any]) -> dict[str, Any]:
        tag = _owner_tag(ctx.instance)
        _check(_libc.mount(tag.encode(), params["path"].encode(), b"tmpfs", 0,
                           f"size={params['size']}".encode()), f"mount tmpfs on {params['path']}")
        return {"path": params["path"], "source": tag}

    def update(self, ctx: Any, params: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
        _check(_libc.mount(None, params["path"].encode(), None, MS_REMOUNT,
                           f"size={params['size']}".encode()), f"remount {params['path']}")
        return dict(record)

    def revert(self, ctx: Any, record: dict[str, Any]) -> None:
        if ("tmpfs", record["source"]) not in mounts_at(record["path"]):
            return
        _check(_libc.umount2(record["path"].encode(), 0), f"umount {record['path']}")


class SlowOp(FileOp):
    def apply(self, ctx: Any, params: dict[str, Any]) -> dict[str, Any]:
        time.sleep(float(params.get("seconds", 1.0)))
        return super().apply(ctx, params)


class BadRecordOp(FileOp):
    """Creates a file but returns a record that is not plain data (an op bug)."""

    def apply(self, ctx: Any, params: dict[str, Any]) -> dict[str, Any]:
        rec = super().apply(ctx, params)
        rec["oops"] = {1, 2}
        return rec

    def revert(self, ctx: Any, record: dict[str, Any]) -> None:
        super().revert(ctx, {k: v for k, v in record.items() if k != "oops"})


class NullOp:
    """Does nothing: for measuring the engine's own overhead."""

    def describe(self, params: dict[str, Any]) -> str:
        return "nothing"

    def probe(self, ctx: Any, params: dict[str, Any], record: dict[str, Any] | None) -> dict[str, Any] | None:
        return record

    def apply(self, ctx: Any, params: dict[str, Any]) -> dict[str, Any]:
        return {"n": params.get("n")}

    def update(self, ctx: Any, params: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
        return {"n": params.get("n")}

    def revert(self, ctx: Any, record: dict[str, Any]) -> None:
        return None


def register() -> None:
    from vbdecl.ops import register as reg

    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    reg("test.dir", "testops:DirOp")
    reg("test.file", "testops:FileOp")
    reg("test.mount", "testops:MountOp")
    reg("test.slow", "testops:SlowOp")
    reg("test.null", "testops:NullOp")
    reg("test.badrecord", "testops:BadRecordOp")
    reg("test.halfrevert", "testops:HalfRevertOp")


# --- plans --------------------------------------------------------------------

def action(aid: str, kind: str, params: dict[str, Any], deps: list[str] | None = None,
           replace: bool = False) -> dict[str, Any]:
    return {"id": aid, "kind": kind, "scope": "host", "deps": deps or [], "params": params,
            "describe": f"{kind} {params.get('path', '')}", "replace": replace}


def make_plan(name: str, root: Path, *, files: int = 10, mounts: int = 3,
              content: str = "v1", size: str = "1m", extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A plan of 1 + 2*mounts + files + mounts actions of several kinds under ``root``.

    With the defaults: 23 actions (dirs, mounts, files, files inside the mounts).
    """
    base = str(root / name)
    acts = [action("dir[/]", "test.dir", {"path": base})]
    for m in range(mounts):
        d = f"{base}/m{m}"
        acts.append(action(f"dir[/m{m}]", "test.dir", {"path": d}, ["dir[/]"]))
        acts.append(action(f"mount[/m{m}]", "test.mount", {"path": d, "size": size}, [f"dir[/m{m}]"]))
    for f in range(files):
        acts.append(action(f"file[/f{f}]", "test.file", {"path": f"{base}/f{f}", "content": f"{content}-{f}"},
                           ["dir[/]"]))
    for m in range(mounts):
        acts.append(action(f"file[/m{m}/x]", "test.file",
                           {"path": f"{base}/m{m}/x", "content": f"{content}-m{m}"}, [f"mount[/m{m}]"]))
    acts += extra or []
    return {"format": 1, "tool_version": "test", "name": name, "labels": {},
            "manifest_hash": "sha256:" + hashlib.sha256(json.dumps(acts, sort_keys=True).encode()).hexdigest(),
            "source": None, "spec": {}, "actions": acts}


def write_plan(path: Path, plan: dict[str, Any]) -> Path:
    path.write_text(json.dumps(plan))
    return path


# --- private mount namespace for a test body ------------------------------------

@contextlib.contextmanager
def namespace_fds(*unshare: str, kinds: tuple[str, ...]) -> Iterator[dict[str, int]]:
    """fds of ``kinds`` (/proc/PID/ns names) of a sleeper of ours in new namespaces
    (``unshare ARGS --fork --kill-child sleep``), ended with the block."""
    holder = subprocess.Popen(["unshare", *unshare, "--fork", "--kill-child", "sleep", "60"])
    fds: dict[str, int] = {}
    try:
        for _ in range(500):    # unshare forks the sleeper once the namespaces exist
            kids = Path(f"/proc/{holder.pid}/task/{holder.pid}/children").read_text().split()
            if kids:
                break
            time.sleep(0.01)
        else:
            raise RuntimeError("unshare did not start its child")
        for kind in kinds:
            fds[kind] = os.open(f"/proc/{kids[0]}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
        yield fds
    finally:
        for fd in fds.values():
            os.close(fd)
        holder.kill()       # --kill-child: the sleeper goes with it
        holder.wait()


def in_private_mount_ns(fn: Any, *args: Any) -> None:
    """Run ``fn(*args)`` in a forked child with its own private mount namespace.

    An exception in the child (assertion) is re-raised here with its text.
    """
    import traceback

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            os.close(r)
            # Kernel 6.18 hands out mount-namespace ids from per-CPU batches, and binding
            # /proc/PID/ns/mnt (the runtime pins namespaces) is refused with EINVAL when that
            # namespace's id is below the caller's. Keep this namespace and every one made
            # under it on one CPU, so ids made later are larger.
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
            _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
            _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
            fn(*args)
        except BaseException:
            os.write(w, traceback.format_exc().encode())
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while True:
        data = os.read(r, 65536)
        if not data:
            break
        chunks.append(data)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise AssertionError("in the private mount namespace:\n" + b"".join(chunks).decode())


def main(argv: list[str]) -> int:
    register()
    from vbdecl.entry import main as vbdecl_main

    return vbdecl_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


# --- snapshots for "exactly as before" ------------------------------------------

def host_tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` with its content ("<dir>" for directories) and the
    mounts under it (fstype and source), as the kernel shows them."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "<dir>"
        for f in filenames:
            p = os.path.join(dirpath, f)
            with open(p) as fh:
                out[os.path.relpath(p, root)] = fh.read()
    prefix = str(root).rstrip("/") + "/"
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        parts = line.split()
        sep = parts.index("-")
        if parts[4].startswith(prefix):
            key = "mount:" + os.path.relpath(parts[4], root)
            opts = ",".join(o for o in parts[sep + 3].split(",") if o.startswith("size="))
            out[key] = out.get(key, "") + f"{parts[sep + 1]} {parts[sep + 2]} {opts};"
    return out


def state_tree(state_dir: Path) -> dict[str, str]:
    """Files of a state directory with their content, except the append-only
    journal (checked separately: no open transaction) and the lock file's holder."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(state_dir):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), state_dir)] = "<dir>"
        for f in filenames:
            p = os.path.join(dirpath, f)
            rel = os.path.relpath(p, state_dir)
            if f.startswith("journal.jsonl") or f == "lock" or f == "global.lock":
                out[rel] = "<present>"
            else:
                with open(p) as fh:
                    out[rel] = fh.read()
    return out


def journal_open(state_dir: Path, name: str) -> bool:
    from vbdecl.engine import journal

    path = state_dir / "envs" / name / "journal.jsonl"
    return journal.open_transaction(journal.read(path)) is not None


def cleanup_envs(state_dir: Path) -> None:
    """Best effort, for a test that failed half way: finish open transactions and
    destroy every environment of ``state_dir`` (real host objects must not leak)."""
    from vbdecl.engine import store
    from vbdecl.engine.executor import Engine
    from vbdecl.engine.faults import Faults

    if not Path(state_dir).exists():
        return
    for name in store.list_envs(str(state_dir)):
        eng = Engine(state_dir, faults=Faults(""), lock_timeout=30)
        for step in (eng.recover, eng.destroy):
            try:
                step(name)
            except Exception:
                pass


def with_cleanup(body: Any, state_dir_of: Any = lambda tmp: tmp / "state") -> Any:
    """Wrap a test body ``body(tmp)`` so that it always ends with :func:`cleanup_envs`."""
    def wrapped(tmp: Path) -> None:
        try:
            body(tmp)
        finally:
            cleanup_envs(state_dir_of(tmp))
    return wrapped

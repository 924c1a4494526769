"""The state store: ``state.json`` and the stored revisions of an environment.

``state.json`` is the last *committed* state; it is only replaced (atomically)
when a transaction commits or a recovery finishes. Revisions are immutable
``revisions/<N>.json`` files, one per apply that changed something.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import secrets
import shutil
import subprocess
import time
import uuid
from typing import Any

from vbdecl.engine import atomic, paths
from vbdecl.engine.stateshape import FORMAT, check
from vbdecl.errors import StateError

State = dict[str, Any]


def new_instance_id() -> str:
    return "vb-" + secrets.token_hex(4)


def new_state(name: str, state_dir: str | None = None) -> State:
    taken = {s.get("instance") for s in (load_or_none(n, state_dir) for n in list_envs(state_dir)) if s}
    instance = new_instance_id()
    while instance in taken:
        instance = new_instance_id()
    return {"format": FORMAT, "name": name, "instance": instance, "lineage": str(uuid.uuid4()),
            "serial": 0, "plan": None, "revision": 0, "resources": {}}


def load(name: str, state_dir: str | None = None) -> State | None:
    """The committed state of ``name``, or None if it has none."""
    path = paths.state_file(name, state_dir)
    try:
        state = atomic.read_json(path)
    except FileNotFoundError:
        return None
    except StateError as exc:
        if exc.hint and "not valid JSON" in exc.message:
            exc.hint = CORRUPT_STATE_HINT
        raise
    return check(state, str(path))


def load_or_none(name: str, state_dir: str | None) -> State | None:
    """The state of ``name``, None when it cannot be read: another environment's damaged
    state must not stop the apply of a new one (a crash review), whose instance id it
    then cannot collide with but by a 1-in-4-billion chance."""
    try:
        return load(name, state_dir)
    except StateError:
        return None


#: what to do about a state.json that cannot be parsed (moving it away is no way out)
CORRUPT_STATE_HINT = (
    "restore it from a backup: it holds the records of what the environment made. Do not "
    "just move it away: vbdecl would forget the environment, and its live processes, mounts, "
    "links, nftables rules and cgroups would stay on the host (each named with the "
    "environment's instance id, vb-...) for you to remove by hand")


def save(name: str, state: State, state_dir: str | None = None) -> None:
    paths.ensure_dir(paths.env_dir(name, state_dir))
    atomic.write_json(paths.state_file(name, state_dir), state)


def remove_state(name: str, state_dir: str | None = None) -> None:
    path = paths.state_file(name, state_dir)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    atomic.fsync_dir(os.path.dirname(path))


def clear_env_dir(name: str, state_dir: str | None = None) -> None:
    """Everything of an environment's directory but its lock file (held by the caller,
    who goes on: the directory goes when it lets go, see :func:`remove_env_dir`)."""
    d = paths.env_dir(name, state_dir)
    try:
        entries = os.listdir(d)
    except FileNotFoundError:
        return
    for entry in entries:
        if entry != "lock":
            path = os.path.join(d, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)


def remove_env_dir(name: str, lock_fd: int, state_dir: str | None = None) -> None:
    """Forget an environment entirely (only when it never committed anything), while
    holding its lock (open at ``lock_fd``). The lock file goes last, and only while it
    is the one held: once it is unlinked, a command waiting for the environment takes
    a new one (engine.lock holds a lock file only while it is the one at its path), and
    the directory and what that command makes in it are not ours to remove."""
    d = paths.env_dir(name, state_dir)
    lock_path = paths.lock_file(name, state_dir)
    try:
        at_path, held = os.stat(lock_path), os.fstat(lock_fd)
    except FileNotFoundError:
        return
    if (at_path.st_dev, at_path.st_ino) != (held.st_dev, held.st_ino):
        return
    clear_env_dir(name, state_dir)
    os.unlink(lock_path)
    with contextlib.suppress(OSError):      # (not empty: another command made it anew)
        os.rmdir(d)
    with contextlib.suppress(OSError):
        atomic.fsync_dir(os.path.dirname(d))


def list_envs(state_dir: str | None = None) -> list[str]:
    """Names of environments that have a state directory."""
    try:
        names = os.listdir(paths.envs_dir(state_dir))
    except FileNotFoundError:
        return []
    return sorted(n for n in names if paths.valid_name(n))


# --- revisions ---------------------------------------------------------------

def git_info(source: str | None) -> dict[str, Any] | None:
    """Commit and dirty flag when ``source`` lives in a git work tree (``untracked``
    too when that commit does not hold the file: git does not track it, ignores it,
    or has it only staged)."""
    if not source or not shutil.which("git"):
        return None
    directory = os.path.dirname(source) or "."
    try:
        head = subprocess.run(["git", "-C", directory, "rev-parse", "--show-toplevel", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        top, commit = head.stdout.split()[:2]
        status = subprocess.run(["git", "-C", directory, "status", "--porcelain", "--", source],
                                capture_output=True, text=True, timeout=10)
        # (whether HEAD holds the file: not when untracked, ignored, or only staged)
        in_head = subprocess.run(["git", "-C", directory, "ls-tree", "--name-only", "HEAD", "--", source],
                                 capture_output=True, text=True, timeout=10)
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    info = {"commit": commit, "dirty": bool(status.stdout.strip()), "toplevel": top}
    if in_head.returncode == 0 and not in_head.stdout.strip():
        # (its commit does not hold the file: a day-2 review saw HEAD+dirty)
        info.update(dirty=True, untracked=True)
    return info


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def save_revision(name: str, number: int, plan: dict[str, Any], state_dir: str | None = None,
                  *, note: str | None = None, from_revision: dict[str, Any] | None = None) -> dict[str, Any]:
    """Record revision ``number``. ``from_revision``: the revision whose plan this one
    applies again (a rollback), whose commit it names, not the work tree's now."""
    source = (plan.get("source") or {}).get("path")
    git = from_revision.get("git") if from_revision is not None else git_info(source)
    rev = {"revision": number, "time": time.time(), "manifest_hash": plan.get("manifest_hash"),
           "source": source, "git": git, "user": _user(), "note": note, "plan": plan}
    paths.ensure_dir(paths.revisions_dir(name, state_dir))
    atomic.write_json(paths.revision_file(name, number, state_dir), rev)
    return rev


# How many revisions an environment keeps (VBDECL_KEEP_REVISIONS; 0 keeps every
# one): each holds a whole compiled plan, and an environment applied from CI many
# times a day would fill the disk with them.
KEEP_REVISIONS = 100


def keep_revisions() -> int:
    """The number of revisions to keep: VBDECL_KEEP_REVISIONS, else KEEP_REVISIONS (0: all)."""
    text = os.environ.get("VBDECL_KEEP_REVISIONS", "").strip()
    if not text:
        return KEEP_REVISIONS
    if not text.isascii() or not text.isdigit():
        raise StateError(f"VBDECL_KEEP_REVISIONS={text!r} is not a number of revisions",
                         hint="set it to how many revisions each environment keeps (0: all), "
                              f"or unset it for {KEEP_REVISIONS}")
    return int(text)


def prune_revisions(name: str, state_dir: str | None = None, keep: int | None = None) -> list[int]:
    """Remove all but the newest ``keep`` revisions of ``name`` (keep_revisions() by
    default; 0 keeps all); the numbers removed."""
    keep = keep_revisions() if keep is None else keep
    numbers = revision_numbers(name, state_dir)
    if keep <= 0 or len(numbers) <= keep:
        return []
    gone = numbers[:-keep]
    for n in gone:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(paths.revision_file(name, n, state_dir))
    atomic.fsync_dir(paths.revisions_dir(name, state_dir))
    return gone


def revision_numbers(name: str, state_dir: str | None = None) -> list[int]:
    try:
        names = os.listdir(paths.revisions_dir(name, state_dir))
    except FileNotFoundError:
        return []
    return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())


def absent(name: str, state_dir: str | None = None,
           hint: str = "vbdecl ls lists the environments") -> StateError:
    """The error for ``name`` without a committed state: destroyed (its revisions are
    kept until a purge, and ls hides it without -a), else never applied (``hint``)."""
    if revision_numbers(name, state_dir):
        return StateError(f"environment {name!r} was destroyed",
                          hint=f"`vbdecl ls -a` lists it, `vbdecl history {name}` its revisions and "
                               f"`vbdecl logs {name}` its last output; `vbdecl destroy --purge {name}` "
                               "forgets it")
    return StateError(f"environment {name!r} does not exist", hint=hint)


def not_committed(name: str, state_dir: str | None = None,
                  hint: str = "vbdecl ls lists the environments") -> StateError:
    """The error for ``name`` without a committed state (:func:`absent`), but for one
    whose first apply left a transaction open: objects of it may be on the host, and
    `recover` is what to do (a review's exec said it did not exist)."""
    from vbdecl.engine import journal

    if journal.open_transaction(journal.read(paths.journal_file(name, state_dir))):
        return StateError(f"environment {name!r} needs recovery: an interrupted or failed command "
                          "left a transaction open", hint=f"run `vbdecl recover {name}`")
    return absent(name, state_dir, hint)


def load_revision(name: str, number: int, state_dir: str | None = None) -> dict[str, Any]:
    """Revision ``number`` of ``name`` (with its plan); StateError if missing."""
    path = paths.revision_file(name, number, state_dir)
    try:
        rev: dict[str, Any] = atomic.read_json(path)
    except FileNotFoundError:
        have = revision_numbers(name, state_dir)
        if not have and not paths.is_dir(paths.env_dir(name, state_dir)):
            raise StateError(f"environment {name!r} does not exist",
                             hint="vbdecl ls lists the environments") from None
        pruned = " (older ones are removed as newer ones are made: VBDECL_KEEP_REVISIONS)" \
            if have and 0 < number < have[0] else ""
        raise StateError(f"environment {name!r} has no revision {number}",
                         hint=f"revisions: {_ranges(have) or 'none'}{pruned} (see vbdecl history {name})") from None
    return rev


def _ranges(numbers: list[int]) -> str:
    """``[1, 2, 3, 7]`` as ``1-3, 7``: a hundred kept revisions in a hint stay short."""
    parts: list[str] = []
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        parts.append(str(numbers[i]) if i == j else f"{numbers[i]}-{numbers[j]}")
        i = j + 1
    return ", ".join(parts)


def history(name: str, state_dir: str | None = None) -> list[dict[str, Any]]:
    """Every revision of ``name`` without its plan, oldest first."""
    out = []
    for n in revision_numbers(name, state_dir):
        rev = load_revision(name, n, state_dir)
        rev.pop("plan", None)
        out.append(rev)
    return out


"""Where vbdecl keeps state and runtime objects.

State (``state.json``, journal, revisions, locks) lives in the *state root*:

1. ``--state-dir DIR`` (passed in as ``override``),
2. ``$VBDECL_STATE_DIR``,
3. ``/var/lib/vbdecl`` for root,
4. ``$XDG_STATE_HOME/vbdecl`` (default ``~/.local/state/vbdecl``) otherwise.

Runtime objects (pinned namespaces, sockets) live in the *runtime root*:
``<state>/run`` when the state root was overridden (so tests never touch
``/run``), ``/run/vbdecl`` for root, ``$XDG_RUNTIME_DIR/vbdecl`` otherwise
(``<state>/run`` when that is unset).

Nothing here creates directories; :func:`ensure_dir` does, on demand.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _overridden(override: str | os.PathLike[str] | None) -> str | None:
    if override:
        return os.fspath(override)
    return os.environ.get("VBDECL_STATE_DIR") or None


def state_root(override: str | os.PathLike[str] | None = None) -> Path:
    """The state root (see the module docstring for the order)."""
    chosen = _overridden(override)
    if chosen:
        return Path(chosen).absolute()
    if os.geteuid() == 0:
        return Path("/var/lib/vbdecl")
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(xdg) / "vbdecl"


def runtime_root(override: str | os.PathLike[str] | None = None) -> Path:
    """The runtime root (see the module docstring for the order)."""
    chosen = _overridden(override)
    if chosen:
        return Path(chosen).absolute() / "run"
    if os.geteuid() == 0:
        return Path("/run/vbdecl")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "vbdecl"
    return state_root() / "run"


def envs_dir(override: str | os.PathLike[str] | None = None) -> Path:
    return state_root(override) / "envs"


def env_dir(name: str, override: str | os.PathLike[str] | None = None) -> Path:
    """``<state>/envs/<name>``: lock, state.json, journal.jsonl, revisions/."""
    check_name(name)
    return envs_dir(override) / name


def state_file(name: str, override: str | os.PathLike[str] | None = None) -> Path:
    return env_dir(name, override) / "state.json"


def journal_file(name: str, override: str | os.PathLike[str] | None = None) -> Path:
    return env_dir(name, override) / "journal.jsonl"


def lock_file(name: str, override: str | os.PathLike[str] | None = None) -> Path:
    return env_dir(name, override) / "lock"


def revisions_dir(name: str, override: str | os.PathLike[str] | None = None) -> Path:
    return env_dir(name, override) / "revisions"


def instance_runtime_dir(instance: str, override: str | os.PathLike[str] | None = None) -> Path:
    """``<runtime>/<instance>``: pinned namespaces, init socket, staging dirs."""
    return runtime_root(override) / instance


def check_name(name: str) -> None:
    """Refuse names that could escape ``envs/`` or are not manifest names."""
    if not NAME_RE.match(name):
        from vbdecl.errors import UsageError

        raise UsageError(f"invalid environment name {name!r}",
                         hint="names match ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def ensure_dir(path: Path, mode: int = 0o700) -> Path:
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    return path

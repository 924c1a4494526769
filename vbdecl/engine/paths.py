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

Caches (compiled plans, seccomp programs) live in :func:`cache_dir`.

Nothing here creates directories; :func:`ensure_dir` does, on demand.
"""

from __future__ import annotations

from vbdecl.sys import oslite as os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from os import PathLike

# Paths are plain strings: pathlib (with the urllib and ipaddress it imports) would
# cost vbdecl exec ~3 ms of start-up.
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
NAME_PATTERN = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"


def valid_name(name: str) -> bool:
    """``name`` matches :data:`NAME_PATTERN` (checked without ``re``, for the same reason)."""
    return 0 < len(name) <= 63 and _NAME_CHARS.issuperset(name) and "-" not in (name[0], name[-1])


def _overridden(override: str | PathLike[str] | None) -> str | None:
    if override:
        return os.fspath(override)
    return os.getenv("VBDECL_STATE_DIR") or None


def state_root(override: str | PathLike[str] | None = None) -> str:
    """The state root (see the module docstring for the order)."""
    chosen = _overridden(override)
    if chosen:
        return os.path.abspath(chosen)
    if os.geteuid() == 0:
        return "/var/lib/vbdecl"
    xdg = os.getenv("XDG_STATE_HOME") or os.path.join(_home(), ".local", "state")
    return os.path.join(xdg, "vbdecl")


def is_dir(path: str | PathLike[str]) -> bool:
    """os.path.isdir, except that a path this user may not look at raises PermissionError
    (isdir says False: an unreadable state directory read as "no such environment")."""
    import stat

    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


def permission_hint(path: str | PathLike[str] | None) -> str:
    """What to do when vbdecl's state at ``path`` may not be read or written by this user."""
    owner = None
    probe = os.path.abspath(os.fspath(path)) if path else None
    while probe:
        try:
            uid = os.stat(probe).st_uid
        except OSError:
            parent = os.path.dirname(probe)
            probe = None if parent == probe else parent
            continue
        import pwd

        try:
            owner = pwd.getpwuid(uid).pw_name
        except KeyError:
            owner = f"uid {uid}"
        break
    who = "run vbdecl as the user whose state it is"
    if owner and owner != _me():
        who = f"it belongs to {owner}: run vbdecl as {owner}" + (" (sudo)" if owner == "root" else "")
    return (f"{who}, fix the directory's permissions, or use a state directory of your own "
            "(--state-dir or VBDECL_STATE_DIR)")


def _me() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return ""


def check_state_root(override: str | PathLike[str] | None) -> None:
    """Refuse a state directory given as a path that is not a directory and cannot
    become one (``--state-dir manifest.yaml``), before a command trips over it."""
    given = _overridden(override)
    if not given:
        return
    existing = _nearest(given)      # (makedirs makes what is missing)
    if existing is None or os.path.isdir(existing):
        return
    from vbdecl.errors import UsageError

    it = "it" if existing == os.path.normpath(given) else existing
    if os.path.islink(existing) and not os.path.exists(existing):
        raise UsageError(f"cannot use {given} as the state directory: {_dangling(existing, it)}",
                         hint=_DANGLING_HINT)
    raise UsageError(f"cannot use {given} as the state directory: {it} is not a directory",
                     hint="give --state-dir (or VBDECL_STATE_DIR) a directory, or a path where "
                          "vbdecl can make one")


def runtime_root(override: str | PathLike[str] | None = None) -> str:
    """The runtime root (see the module docstring for the order)."""
    chosen = _overridden(override)
    if chosen:
        return os.path.join(os.path.abspath(chosen), "run")
    if os.geteuid() == 0:
        return "/run/vbdecl"
    xdg = os.getenv("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "vbdecl")
    return os.path.join(state_root(), "run")


def own_runtime_root(path: str, override: str | PathLike[str] | None = None) -> bool:
    """Whether the runtime root ``path`` is ``<state root>/run`` (of a --state-dir, or a
    user without XDG_RUNTIME_DIR), vbdecl's to remove once empty: not /run/vbdecl nor
    XDG's ``vbdecl``."""
    return path == os.path.join(state_root(override), "run")


def envs_dir(override: str | PathLike[str] | None = None) -> str:
    return os.path.join(state_root(override), "envs")


def env_dir(name: str, override: str | PathLike[str] | None = None) -> str:
    """``<state>/envs/<name>``: lock, state.json, journal.jsonl, revisions/."""
    check_name(name)
    return os.path.join(envs_dir(override), name)


def state_file(name: str, override: str | PathLike[str] | None = None) -> str:
    return os.path.join(env_dir(name, override), "state.json")


def journal_file(name: str, override: str | PathLike[str] | None = None) -> str:
    return os.path.join(env_dir(name, override), "journal.jsonl")


def lock_file(name: str, override: str | PathLike[str] | None = None) -> str:
    return os.path.join(env_dir(name, override), "lock")


def revisions_dir(name: str, override: str | PathLike[str] | None = None) -> str:
    return os.path.join(env_dir(name, override), "revisions")


def revision_file(name: str, number: int, override: str | PathLike[str] | None = None) -> str:
    return os.path.join(revisions_dir(name, override), f"{number}.json")


def instance_runtime_dir(instance: str, override: str | PathLike[str] | None = None) -> str:
    """``<runtime>/<instance>``: pinned namespaces, init socket, staging dirs."""
    return os.path.join(runtime_root(override), instance)


def check_name(name: str) -> None:
    """Refuse names that could escape ``envs/`` or are not manifest names."""
    if not valid_name(name):
        from vbdecl.errors import UsageError

        hint = f"names match {NAME_PATTERN}"
        if "/" in name or name.endswith((".yaml", ".yml")):
            # (a day-2 review gave `status` a manifest file, as `destroy` takes one)
            hint = f"{name} looks like a file: give the environment's name (its metadata.name); {hint}"
        raise UsageError(f"invalid environment name {name!r}", hint=hint)


def _home() -> str:
    """expanduser("~"), without importing os where $HOME is set."""
    home = os.getenv("HOME")
    if home is None:
        import posixpath

        return posixpath.expanduser("~")
    return home.rstrip("/") or "/"


def cache_dir() -> str:
    """Compiled plans and seccomp programs: ``$VBDECL_CACHE_DIR``, else
    ``/var/cache/vbdecl`` for root, else ``$XDG_CACHE_HOME/vbdecl`` (``~/.cache/vbdecl``)."""
    env = os.getenv("VBDECL_CACHE_DIR")
    if env:
        return env
    if os.geteuid() == 0:
        return "/var/cache/vbdecl"
    xdg = os.getenv("XDG_CACHE_HOME") or os.path.join(_home(), ".cache")
    return os.path.join(xdg, "vbdecl")


def ensure_dir(path: str, mode: int = 0o700) -> str:
    """Make ``path`` (and what is missing above it). One that cannot be made is a
    StateError that says why (a PermissionError stays one: the CLI words it with
    :func:`permission_hint`)."""
    try:
        from os import makedirs

        makedirs(path, mode=mode, exist_ok=True)
    except PermissionError:
        raise
    except OSError as exc:
        from vbdecl.errors import StateError

        link = _nearest(path)
        if link is not None and os.path.islink(link) and not os.path.exists(link):
            raise StateError(f"cannot make the directory {path}: {_dangling(link, link)}",
                             hint=_DANGLING_HINT) from None
        raise StateError(f"cannot make the directory {path}: {exc.strerror or exc}",
                         hint=STATE_DIR_HINT) from None
    return path


STATE_DIR_HINT = ("vbdecl keeps its state there: give --state-dir (or VBDECL_STATE_DIR) a "
                  "directory on a filesystem it can write")


def _nearest(path: str) -> str | None:
    """``path``, or the nearest directory above it, that is there (a link to nothing
    included); None if none is."""
    existing = os.path.normpath(path)
    while not os.path.lexists(existing):
        parent = os.path.dirname(existing) or "."
        if parent == existing:
            return None
        existing = parent
    return existing


_DANGLING_HINT = ("make the directory it points to (or mount the disk that holds it), or give "
                  "--state-dir (or VBDECL_STATE_DIR) another directory")


def _dangling(link: str, named: str) -> str:
    return f"{named} is a symbolic link to {os.readlink(link)}, which does not exist"

"""Parse bubblewrap's command line into a normalized vbdecl document.

The result has the shape of ``vbdecl.model.load_normalized`` (see
docs/plan-format.md): ``{"name", "labels", "annotations", "source", "spec"}``
with bubblewrap's semantics made explicit: its defaults (only a mount
namespace, the host's network), its modes for created files and
directories, ``--perms``/``--size`` applying to the next operation only,
``--overlay-src`` layers stacked bottom-first, and the fd-based options
kept as ``fd`` keys and ``spec["vb"]`` extras.

Standard library only: this runs on the ``vb`` fast path.
"""

from __future__ import annotations

from vbdecl.sys import oslite as os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


MAX_ARGS = 9000     # bubblewrap's limit on arguments, those read with --args included

# Modes bubblewrap gives what it creates when no --perms precedes it.
DEFAULT_TMPFS_MODE = 0o755
DEFAULT_DIR_MODE = 0o755
DEFAULT_FILE_MODE = 0o666
DEFAULT_BIND_DATA_MODE = 0o600

# Options --perms may precede, and those --size may precede.
_PERMS_CONSUMERS = {"--tmpfs", "--dir", "--file", "--bind-data", "--ro-bind-data"}
_SIZE_CONSUMERS = {"--tmpfs"}
_OVERLAY_CONSUMERS = {"--overlay", "--tmp-overlay", "--ro-overlay"}


class VbUsageError(Exception):
    """A command-line error; printed as ``<prog>: <message>``, exit status 1."""


class HelpRequested(Exception):
    pass


class UsageRequested(VbUsageError):
    """No command: bubblewrap prints its usage on stderr and exits with status 1."""

    def __init__(self) -> None:
        super().__init__("No command specified")


class VersionRequested(Exception):
    pass


# option -> number of arguments
_ARITY: dict[str, int] = {
    "--help": 0, "--version": 0, "--level-prefix": 0, "--print-manifest": 0,
    "--unshare-all": 0, "--share-net": 0, "--unshare-user": 0, "--unshare-user-try": 0,
    "--unshare-ipc": 0, "--unshare-pid": 0, "--unshare-net": 0, "--unshare-uts": 0,
    "--unshare-cgroup": 0, "--unshare-cgroup-try": 0, "--disable-userns": 0,
    "--assert-userns-disabled": 0, "--clearenv": 0, "--new-session": 0,
    "--die-with-parent": 0, "--as-pid-1": 0, "--pivot-root": 0, "--chroot": 0,
    "--no-pivot-root": 0,
    "--args": 1, "--argv0": 1, "--userns": 1, "--userns2": 1, "--pidns": 1, "--uid": 1,
    "--gid": 1, "--hostname": 1, "--chdir": 1, "--unsetenv": 1, "--lock-file": 1,
    "--sync-fd": 1, "--perms": 1, "--size": 1, "--remount-ro": 1, "--overlay-src": 1,
    "--tmp-overlay": 1, "--ro-overlay": 1, "--exec-label": 1, "--file-label": 1,
    "--proc": 1, "--dev": 1, "--tmpfs": 1, "--mqueue": 1, "--dir": 1, "--seccomp": 1,
    "--add-seccomp-fd": 1, "--block-fd": 1, "--userns-block-fd": 1, "--info-fd": 1,
    "--json-status-fd": 1, "--cap-add": 1, "--cap-drop": 1,
    "--landlock-read": 1, "--landlock-write": 1, "--landlock-rw": 1, "--landlock-exec": 1,
    "--landlock-read-try": 1, "--landlock-write-try": 1, "--landlock-rw-try": 1,
    "--landlock-exec-try": 1,
    "--limit-memory": 1, "--limit-cpu": 1, "--limit-pids": 1, "--net-bridge": 1,
    "--setenv": 2, "--bind": 2, "--bind-try": 2, "--dev-bind": 2, "--dev-bind-try": 2,
    "--ro-bind": 2, "--ro-bind-try": 2, "--bind-fd": 2, "--ro-bind-fd": 2, "--file": 2,
    "--bind-data": 2, "--ro-bind-data": 2, "--symlink": 2, "--chmod": 2,
    "--overlay": 3,
}

_ARITY_WORDS = {1: "an argument", 2: "two arguments", 3: "three arguments"}
# where bubblewrap words it otherwise ("--ro-bind-fd" shares "--bind-fd"'s message)
_ARITY_TEXT = {"--argv0": "--argv0 takes one argument", "--chdir": "--chdir takes one argument",
               "--remount-ro": "--remount-ro takes one argument",
               "--ro-bind-fd": "--bind-fd takes two arguments",
               "--overlay-src": "--overlay-src must be followed by another --overlay-src or one of "
                                "--overlay, --tmp-overlay, or --ro-overlay"}
_OVERLAY_SRC_ALONE = _ARITY_TEXT["--overlay-src"]

# Options bubblewrap warns about when given again: the last one wins.
_LAST_WINS = {"--chdir", "--sync-fd", "--block-fd", "--userns-block-fd", "--info-fd", "--json-status-fd",
              "--seccomp", "--userns", "--userns2", "--pidns", "--uid", "--gid", "--hostname"}

# Options that take one fd, and the VbOptions attribute that holds it.
_FD_OPTIONS = {"--userns": "userns_fd", "--userns2": "userns2_fd", "--pidns": "pidns_fd",
               "--sync-fd": "sync_fd", "--block-fd": "block_fd", "--userns-block-fd": "userns_block_fd",
               "--info-fd": "info_fd", "--json-status-fd": "json_status_fd"}

ALL_CAPS = (1 << 64) - 1    # --cap-add/--cap-drop ALL (bubblewrap: both words all ones)


class VbOptions:
    """Everything bubblewrap's command line says, before it becomes a spec."""

    unshare: dict[str, bool]
    user_try: bool = False
    cgroup_try: bool = False
    userns_fd: int | None = None
    userns2_fd: int | None = None
    pidns_fd: int | None = None
    disable_userns: bool = False
    assert_userns_disabled: bool = False
    uid: int | None = None
    gid: int | None = None
    hostname: str | None = None
    chdir: str | None = None
    argv0: str | None = None
    env_ops: list[tuple[str, str | None]]  # ("set"/"unset"/"clear", ...)
    env_sets: dict[str, str]
    env_unsets: list[str]
    clear_env: bool = False
    lock_files: list[str]
    sync_fd: int | None = None
    block_fd: int | None = None
    userns_block_fd: int | None = None
    info_fd: int | None = None
    json_status_fd: int | None = None
    seccomp_fds: list[int]
    used_seccomp: bool = False
    used_add_seccomp: bool = False
    new_session: bool = False
    die_with_parent: bool = False
    as_pid_1: bool = False
    pivot: bool = True
    level_prefix: bool = False
    print_manifest: bool = False
    cap_ops: list[tuple[str, int]]  # ("add"/"drop", capability bits)
    warnings: list[str]     # bubblewrap's warnings, in order ("Only the last ...")
    given: set[str]         # the options of _LAST_WINS met so far
    filesystem: list[dict[str, Any]]
    landlock: dict[str, list[str]]
    landlock_try: list[str]
    limits: dict[str, Any]
    net_bridge: str | None = None
    command: list[str]

    def __init__(self) -> None:
        self.unshare: dict[str, bool] = {
            "user": False, "ipc": False, "pid": False, "net": False, "uts": False, "cgroup": False}
        self.env_ops: list[tuple[str, str | None]] = []
        self.env_sets: dict[str, str] = {}
        self.env_unsets: list[str] = []
        self.lock_files: list[str] = []
        self.seccomp_fds: list[int] = []
        self.cap_ops: list[tuple[str, int]] = []
        self.warnings: list[str] = []
        self.given: set[str] = set()
        self.filesystem: list[dict[str, Any]] = []
        self.landlock: dict[str, list[str]] = {
            "read": [], "write": [], "read_write": [], "execute": []}
        self.landlock_try: list[str] = []
        self.limits: dict[str, Any] = {}
        self.command: list[str] = []


def _strtol(value: str) -> int | None:
    """``value`` as bubblewrap reads an fd or id: strtol base 10, the whole string, an int."""
    text = value.lstrip(" \t\n\v\f\r")
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    n = int(text, 10)
    return n if -(1 << 31) <= n < 1 << 31 else None


def _fd(opt: str, value: str) -> int:
    fd = _strtol(value)
    if fd is None or fd < 0:
        raise VbUsageError(f"Invalid fd: {value}")
    return fd


def _octal(opt: str, value: str) -> int:
    """--perms/--chmod as bubblewrap reads them: strtoul(value, 8), all of it, <= 07777."""
    bad = VbUsageError(f"{opt} takes an octal argument <= 07777")
    text = value.lstrip(" \t\n\v\f\r")
    negative = text[:1] == "-"
    if text[:1] in ("+", "-"):
        text = text[1:]
    if not text or text.strip("01234567"):
        raise bad
    mode = int(text, 8)
    if negative and mode:
        raise bad       # strtoul wraps a negative number around: far above 07777
    if mode > 0o7777:
        raise bad
    return mode


def _id(opt: str, value: str) -> int:
    n = _strtol(value)
    if n is None or n < 0:
        raise VbUsageError(f"Invalid {opt.lstrip('-')}: {value}")
    return n


def _read_args_fd(fd: int) -> list[str]:
    """The NUL-separated arguments of an --args fd (read to its end, then closed)."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError as exc:
            raise VbUsageError(f"Can't read --args data: {exc.strerror}") from None
        if not chunk:
            break
        chunks.append(chunk)
    try:
        os.close(fd)
    except OSError:
        pass
    # bubblewrap splits on NUL; a trailing NUL ends the last argument.
    parts = b"".join(chunks).split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    return [os.fsdecode(p) for p in parts]


class _Pending:
    """What modifies the next option (bubblewrap's next_perms, next_size_arg and its
    overlay sources), and the number of arguments parsed, shared across --args."""

    def __init__(self, total: int) -> None:
        self.perms: int | None = None
        self.size: int | None = None
        self.overlay_srcs: list[str] = []
        self.total = total

    def take_perms(self, default: int) -> int:
        """The mode --perms gave the option that creates a file (consumed), else ``default``."""
        perms, self.perms = self.perms, None
        return default if perms is None else perms


def parse(argv: list[str], *, uid: int | None = None, gid: int | None = None) -> VbOptions:
    """Parse the arguments after the program name. ``uid``/``gid``: the caller's real
    ids (default: ours), which bubblewrap's rules depend on. The warnings given on
    the way are in ``warnings``, of the options or of the exception raised."""
    o = VbOptions()
    try:
        if len(argv) > MAX_ARGS:
            raise VbUsageError(f"Exceeded maximum number of arguments {MAX_ARGS}")
        st = _Pending(len(argv))
        o.command = _parse_list(o, st, list(argv), in_file=False)
        if st.overlay_srcs:
            raise VbUsageError(_OVERLAY_SRC_ALONE)
        _check(o, os.getuid() if uid is None else uid, os.getgid() if gid is None else gid)
    except (VbUsageError, HelpRequested, VersionRequested) as err:
        err.warnings = o.warnings   # type: ignore[union-attr]
        err.level_prefix = o.level_prefix   # type: ignore[union-attr]  # (if given before the error)
        raise
    return o


def _parse_list(o: VbOptions, st: _Pending, args: list[str], *, in_file: bool) -> list[str]:
    """bubblewrap's parse_args_recurse: the options of ``args`` in order, each checked
    when it is met; returns what follows them (the command, at the top level)."""
    i = 0
    while i < len(args):
        opt = args[i]
        if opt == "--":
            return args[i + 1:]
        if not opt.startswith("-"):
            return args[i:]
        if opt not in _ARITY:
            raise VbUsageError(f"Unknown option {opt}")
        n = _ARITY[opt]
        if i + n >= len(args):
            raise VbUsageError(_ARITY_TEXT.get(opt) or f"{opt} takes {_ARITY_WORDS[n]}")
        a = args[i + 1:i + 1 + n]
        i += 1 + n
        if opt == "--args":
            if in_file:
                raise VbUsageError("--args not supported in arguments file")
            data = _read_args_fd(_fd(opt, a[0]))
            st.total += len(data)
            if st.total > MAX_ARGS:
                raise VbUsageError(f"Exceeded maximum number of arguments {MAX_ARGS}")
            _parse_list(o, st, data, in_file=True)     # what follows options there is ignored
        else:
            if opt in _LAST_WINS:
                if opt in o.given:
                    o.warnings.append(f"Only the last {opt} option will take effect")
                o.given.add(opt)
            _option(o, st, opt, a)
        # what --perms, --size and --overlay-src modify must come next
        if opt not in ("--perms", "--size"):
            if st.perms is not None:
                raise VbUsageError("--perms must be followed by an option that creates a file")
            if st.size is not None:
                raise VbUsageError("--size must be followed by --tmpfs")
        if opt != "--overlay-src" and st.overlay_srcs:
            raise VbUsageError(_OVERLAY_SRC_ALONE)
    return []


def _option(o: VbOptions, st: _Pending, opt: str, a: list[str]) -> None:
    """One option with its arguments ``a``."""
    if opt == "--help":
        raise HelpRequested
    if opt == "--version":
        raise VersionRequested
    if opt == "--level-prefix":
        o.level_prefix = True
    elif opt == "--print-manifest":
        o.print_manifest = True
    elif opt == "--unshare-all":
        o.unshare.update(ipc=True, pid=True, net=True, uts=True)
        o.user_try = True
        o.cgroup_try = True
    elif opt == "--share-net":
        o.unshare["net"] = False
    elif opt == "--unshare-user":
        o.unshare["user"] = True
    elif opt == "--unshare-user-try":
        o.user_try = True
    elif opt == "--unshare-cgroup-try":
        o.cgroup_try = True
    elif opt.startswith("--unshare-"):
        o.unshare[opt[len("--unshare-"):]] = True
    elif opt in _FD_OPTIONS:
        setattr(o, _FD_OPTIONS[opt], _fd(opt, a[0]))
    elif opt == "--disable-userns":
        o.disable_userns = True
    elif opt == "--assert-userns-disabled":
        o.assert_userns_disabled = True
    elif opt == "--uid":
        o.uid = _id(opt, a[0])
    elif opt == "--gid":
        o.gid = _id(opt, a[0])
    elif opt == "--hostname":
        o.hostname = a[0]
    elif opt == "--chdir":
        o.chdir = a[0]
    elif opt == "--argv0":
        if o.argv0 is not None:
            raise VbUsageError("--argv0 used multiple times")
        o.argv0 = a[0]
    elif opt == "--setenv":
        if not a[0] or "=" in a[0]:     # setenv(3) refuses the name: EINVAL
            raise VbUsageError("setenv failed")
        o.env_ops.append(("set", f"{a[0]}={a[1]}"))
    elif opt == "--unsetenv":
        if not a[0] or "=" in a[0]:
            raise VbUsageError("unsetenv failed")
        o.env_ops.append(("unset", a[0]))
    elif opt == "--clearenv":
        o.env_ops.append(("clear", None))
    elif opt == "--lock-file":
        o.lock_files.append(a[0])
    elif opt == "--seccomp":
        if o.used_add_seccomp:
            raise VbUsageError("--seccomp cannot be combined with --add-seccomp-fd")
        o.used_seccomp = True
        o.seccomp_fds = [_fd(opt, a[0])]
    elif opt == "--add-seccomp-fd":
        if o.used_seccomp:
            raise VbUsageError("--add-seccomp-fd cannot be combined with --seccomp")
        o.used_add_seccomp = True
        o.seccomp_fds.append(_fd(opt, a[0]))
    elif opt in ("--exec-label", "--file-label"):
        raise VbUsageError("labeling not supported on this system")   # bubblewrap without SELinux
    elif opt == "--new-session":
        o.new_session = True
    elif opt == "--die-with-parent":
        o.die_with_parent = True
    elif opt == "--as-pid-1":
        o.as_pid_1 = True
    elif opt == "--pivot-root":
        o.pivot = True
    elif opt in ("--chroot", "--no-pivot-root"):
        o.pivot = False
    elif opt in ("--cap-add", "--cap-drop"):
        o.cap_ops.append((opt[len("--cap-"):], _cap_bits(a[0])))
    elif opt == "--perms":
        if st.perms is not None:
            raise VbUsageError("--perms given twice for the same action")
        st.perms = _octal(opt, a[0])
    elif opt == "--size":
        if st.size is not None:
            raise VbUsageError("--size given twice for the same action")
        st.size = _size(a[0])
    elif opt in ("--bind", "--bind-try", "--dev-bind", "--dev-bind-try", "--ro-bind", "--ro-bind-try"):
        kind = opt[2:].removesuffix("-try")
        o.filesystem.append({"type": kind, "source": a[0], "target": a[1],
                             "optional": opt.endswith("-try")})
    elif opt in ("--bind-fd", "--ro-bind-fd"):
        kind = "ro-bind" if opt == "--ro-bind-fd" else "bind"
        fd = _fd(opt, a[0])
        o.filesystem.append({"type": kind, "source": f"/proc/self/fd/{fd}", "fd": fd,
                             "target": a[1], "optional": False})
    elif opt == "--remount-ro":
        o.filesystem.append({"type": "remount-ro", "target": a[0]})
    elif opt in ("--proc", "--dev", "--mqueue"):
        o.filesystem.append({"type": opt[2:], "target": a[0]})
    elif opt == "--tmpfs":
        o.filesystem.append({"type": "tmpfs", "target": a[0], "size": st.size,
                             "mode": st.take_perms(DEFAULT_TMPFS_MODE)})
        st.size = None
    elif opt == "--dir":
        o.filesystem.append({"type": "dir", "target": a[0],
                             "mode": st.take_perms(DEFAULT_DIR_MODE)})
    elif opt == "--file":
        o.filesystem.append({"type": "file", "target": a[1], "fd": _fd(opt, a[0]),
                             "content": None, "source": None,
                             "mode": st.take_perms(DEFAULT_FILE_MODE)})
    elif opt in ("--bind-data", "--ro-bind-data"):
        o.filesystem.append({"type": "bind-data", "target": a[1], "fd": _fd(opt, a[0]),
                             "content": None, "readonly": opt == "--ro-bind-data",
                             "mode": st.take_perms(DEFAULT_BIND_DATA_MODE)})
    elif opt == "--symlink":
        o.filesystem.append({"type": "symlink", "points_to": a[0], "target": a[1]})
    elif opt == "--chmod":
        o.filesystem.append({"type": "chmod", "mode": _octal(opt, a[0]), "target": a[1]})
    elif opt == "--overlay-src":
        st.overlay_srcs.append(a[0])
    elif opt in _OVERLAY_CONSUMERS:
        if len(st.overlay_srcs) < (2 if opt == "--ro-overlay" else 1):
            raise VbUsageError(f"{opt} requires at least {'two' if opt == '--ro-overlay' else 'one'} "
                               "--overlay-src")
        # bubblewrap stacks sources bottom-first; the spec uses the kernel's top-first order.
        lower = list(reversed(st.overlay_srcs))
        st.overlay_srcs = []
        # (bubblewrap 0.11 mounts every overlay with userxattr)
        if opt == "--overlay":
            o.filesystem.append({"type": "overlay", "lower": lower, "upper": a[0],
                                 "work": a[1], "target": a[2], "userxattr": True})
        else:
            o.filesystem.append({"type": opt[2:], "lower": lower, "target": a[0], "userxattr": True})
    elif opt.startswith("--landlock-"):
        access = {"read": "read", "write": "write", "rw": "read_write", "exec": "execute"}[
            opt[len("--landlock-"):].removesuffix("-try")]
        o.landlock[access].append(a[0])
        if opt.endswith("-try"):
            o.landlock_try.append(a[0])
    elif opt == "--limit-memory":
        o.limits["memory"] = a[0]
    elif opt == "--limit-cpu":
        o.limits["cpu"] = a[0]
    elif opt == "--limit-pids":
        o.limits["pids"] = a[0]
    elif opt == "--net-bridge":
        from vbdecl.model.names import ifname_problem

        if problem := ifname_problem(a[0], "bridge"):
            raise VbUsageError(f"--net-bridge: {problem[0]}")
        o.net_bridge = a[0]


_DIGITS = tuple("0123456789")
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")   # (C locale isalpha)


def _cap_bits(value: str) -> int:
    """A --cap-add/--cap-drop argument as bubblewrap reads it: ALL (any case), a name
    as libcap's cap_from_name reads it (CAP_NET_RAW in any case, the prefix
    required: bwrap refuses NET_RAW; what follows the letters and underscores
    ignored, so "cap_net_raw,cap_kill" is CAP_NET_RAW alone), or a number below 64
    (strtoul base 0, what follows the digits ignored)."""
    from vbdecl.model.names import CAPABILITIES

    if value.upper() == "ALL":
        return ALL_CAPS
    if value[:1] in _DIGITS:     # (ASCII: isdigit() takes "¹", which strtoul does not)
        number = _strtoul_prefix(value)
        if number < 64:
            return 1 << number
    elif value.upper().startswith("CAP_"):
        end = 4
        while end < len(value) and (value[end] == "_" or value[end] in _LETTERS):
            end += 1
        bit = CAPABILITIES.get(value[4:end].upper())
        if bit is not None:
            return 1 << bit
    raise VbUsageError(f"unknown cap: {value}")


def _strtoul_prefix(text: str) -> int:
    """strtoul(text, NULL, 0) of a string that starts with a digit: the leading number."""
    if text[:2].lower() == "0x" and text[2:3] and text[2:3] in "0123456789abcdefABCDEF":
        base, digits = 16, "0123456789abcdefABCDEF"
        text = text[2:]
    elif text.startswith("0"):
        base, digits = 8, "01234567"
    else:
        base, digits = 10, "0123456789"
    end = 0
    while end < len(text) and text[end] in digits:
        end += 1
    return int(text[:end], base)


def _check(o: VbOptions, real_uid: int, real_gid: int) -> None:
    """bubblewrap's cross-option rules, in its order, with its messages (bubblewrap.c,
    main() after parse_args). A non-setuid bubblewrap run by a non-root user implies
    --unshare-user (without --userns) after the rules about user namespace options
    and before those about ids; vb does the same."""
    if o.used_seccomp and o.used_add_seccomp:
        raise VbUsageError("--seccomp cannot be combined with --add-seccomp-fd")
    if o.userns_block_fd is not None and not o.unshare["user"]:
        raise VbUsageError("--userns-block-fd requires --unshare-user")
    if o.userns_block_fd is not None and o.info_fd is None:
        raise VbUsageError("--userns-block-fd requires --info-fd")
    if o.userns_fd is not None and o.unshare["user"]:
        raise VbUsageError("--userns not compatible --unshare-user")
    if o.userns_fd is not None and o.user_try:
        raise VbUsageError("--userns not compatible --unshare-user-try")
    if o.disable_userns and not o.unshare["user"]:
        raise VbUsageError("--disable-userns requires --unshare-user")
    if o.disable_userns and o.userns_block_fd is not None:
        raise VbUsageError("--disable-userns is not compatible with  --userns-block-fd")
    # vb's own rules (bubblewrap would fail later, or not at all)
    if o.userns2_fd is not None and o.userns_fd is None:
        raise VbUsageError("--userns2 requires --userns")
    if real_uid != 0 and o.userns_fd is None:
        o.unshare["user"] = True      # not setuid: a user namespace is the only way
    o.user_try = o.user_try and not o.unshare["user"]
    if o.user_try and not _userns_disabled():
        o.unshare["user"] = True      # bubblewrap looks before it creates the namespaces
    if not o.command:
        raise UsageRequested
    wants_user = o.unshare["user"] or o.userns_fd is not None
    if o.uid is not None and o.uid != real_uid and not wants_user:
        raise VbUsageError("Specifying --uid requires --unshare-user or --userns")
    if o.gid is not None and o.gid != real_gid and not wants_user:
        raise VbUsageError("Specifying --gid requires --unshare-user or --userns")
    if o.hostname is not None and not o.unshare["uts"]:
        raise VbUsageError("Specifying --hostname requires --unshare-uts")
    if o.as_pid_1 and not o.unshare["pid"]:
        raise VbUsageError("Specifying --as-pid-1 requires --unshare-pid")
    if o.as_pid_1 and o.lock_files:
        raise VbUsageError("Specifying --as-pid-1 and --lock-file is not permitted")


def _userns_disabled() -> bool:
    """--unshare-user-try as bubblewrap decides it: user namespaces are off when the
    kernel has none, its user_namespace module is not enabled, or
    user.max_user_namespaces is 0."""
    if not os.path.exists("/proc/self/ns/user"):
        return True
    for path, off in (("/sys/module/user_namespace/parameters/enable", "N"),
                      ("/proc/sys/user/max_user_namespaces", "0\n")):
        try:
            with open(path) as f:
                value = f.read()
        except OSError:
            continue
        if value == off or (off == "N" and value.startswith("N")):
            return True
    return False


def _env(o: VbOptions) -> tuple[bool, dict[str, str], list[str]]:
    """Fold --setenv/--unsetenv/--clearenv, applied in order, into (clear, set, unset)."""
    clear = False
    env: dict[str, str] = {}
    unset: list[str] = []
    for op, value in o.env_ops:
        if op == "clear":
            clear = True
            env.clear()
            unset.clear()
        elif op == "set" and value is not None:
            key, _, val = value.partition("=")
            env[key] = val      # (still unset first, if it was: it then comes last, as setenv(3) puts it)
        elif op == "unset" and value is not None:
            env.pop(value, None)
            if value not in unset:
                unset.append(value)
    return clear, env, unset


def _requested_caps(o: VbOptions, real_uid: int, caller: dict[str, int], full: int) -> int:
    """bubblewrap's requested_caps: the caller's effective set for root, else none;
    then --cap-add/--cap-drop in order (ALL: every capability)."""
    requested = caller["CapEff"] if real_uid == 0 else 0
    for op, bits in o.cap_ops:
        requested = requested | bits if op == "add" else requested & ~bits
    return requested & full


def bwrap_capabilities(requested: int, capset: bool, userns: bool, caller: dict[str, int],
                       full: int) -> dict[str, int]:
    """The capability sets bubblewrap (not setuid) leaves its command just before
    execve, as masks: ``bounding``, ``permitted``, ``inheritable``, ``ambient``.

    - ``requested``: requested_caps (:func:`_requested_caps`);
    - ``capset``: whether bubblewrap capset()s them (drop_all_caps): always for a
      non-root caller, for root only after --cap-add/--cap-drop;
    - ``userns``: the command runs in a user namespace bubblewrap created or joined:
      it starts there with every capability and an empty inheritable set, and
      bubblewrap drops from the bounding set what was not requested; otherwise the
      caller's sets (``caller``: the CapPrm/CapInh/CapBnd/CapAmb masks) stay as they are.

    capset() fails when it asks for a capability that is not permitted (or, as
    inheritable, neither inheritable nor in the bounding set); bubblewrap ignores
    that failure for root and nothing changes. Then it raises each requested
    capability to ambient, which works only for those permitted and inheritable.
    """
    if userns:
        bounding, permitted, inheritable, ambient = requested & full, full, 0, 0
    else:
        bounding, permitted = caller["CapBnd"], caller["CapPrm"]
        inheritable, ambient = caller["CapInh"], caller["CapAmb"]
    if capset and not requested & ~permitted and not requested & ~(inheritable | bounding):
        permitted = inheritable = requested
        ambient &= requested
    ambient |= requested & permitted & inheritable
    return {"bounding": bounding, "permitted": permitted, "inheritable": inheritable,
            "ambient": ambient}


def payload_capabilities(sets: dict[str, int], root: bool) -> int:
    """The permitted (and effective) set of the command bubblewrap execs with ``sets``
    (no_new_privs on, a program without file capabilities): for uid 0 what the
    bounding and inheritable sets allow of the permitted set, plus the ambient set;
    for another uid the ambient set."""
    if not root:
        return sets["ambient"]
    return (sets["bounding"] | sets["inheritable"]) & sets["permitted"] | sets["ambient"]


def _cap_lists(keep: set[str]) -> dict[str, list[str]]:
    from vbdecl.model.names import CAPABILITIES

    if keep == set(CAPABILITIES):
        return {"drop": [], "add": ["ALL"]}
    return {"drop": ["ALL"], "add": sorted(keep, key=lambda n: CAPABILITIES[n])}


def _mask_names(mask: int) -> list[str]:
    from vbdecl.model.names import CAPABILITIES

    return [name for name, bit in sorted(CAPABILITIES.items(), key=lambda kv: kv[1]) if mask >> bit & 1]


def caller_cap_masks() -> dict[str, int]:
    """This process's CapInh/CapPrm/CapEff/CapBnd/CapAmb masks (/proc/self/status):
    the caller's, as bubblewrap sees them when it starts."""
    masks: dict[str, int] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Cap"):
                    key, _, value = line.partition(":")
                    masks[key] = int(value.strip(), 16)
    except (OSError, ValueError):
        pass
    full = _full_mask()
    for key in ("CapPrm", "CapEff", "CapBnd"):
        masks.setdefault(key, full)
    for key in ("CapInh", "CapAmb"):
        masks.setdefault(key, 0)
    return masks


def _full_mask() -> int:
    """Every capability the running kernel knows (and vbdecl names)."""
    from vbdecl.model.names import CAP_LAST

    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = min(int(f.read()), CAP_LAST)
    except (OSError, ValueError):
        last = CAP_LAST
    return (1 << (last + 1)) - 1


def _caller_caps(known: dict[str, int]) -> set[str]:
    """The capabilities vb itself holds (its permitted set)."""
    mask = caller_cap_masks()["CapPrm"]
    return {name for name, bit in known.items() if mask >> bit & 1}


def consumed_fds(o: VbOptions) -> set[int]:
    """The caller's fds that options name: vb reads, joins, writes or holds them, and
    the command does not inherit them."""
    named = [o.userns_fd, o.userns2_fd, o.pidns_fd, o.sync_fd, o.block_fd, o.userns_block_fd,
             o.info_fd, o.json_status_fd, *o.seccomp_fds, *(e.get("fd") for e in o.filesystem)]
    return {fd for fd in named if isinstance(fd, int)}


def to_document(o: VbOptions, *, uid: int | None = None, gid: int | None = None,
                cwd: str | None = None, inherit_fds: list[int] | None = None) -> dict[str, Any]:
    """The normalized document (docs/plan-format.md) for these options. ``inherit_fds``:
    the caller's open fds, which the command inherits (as bubblewrap's does) but for
    those the options name."""
    real_uid = os.getuid() if uid is None else uid
    real_gid = os.getgid() if gid is None else gid
    # Not setuid: an unprivileged caller always gets a user namespace, as bubblewrap does.
    user = o.unshare["user"] or (real_uid != 0 and o.userns_fd is None)
    sandbox_uid = o.uid if o.uid is not None else real_uid
    sandbox_gid = o.gid if o.gid is not None else real_gid
    clear, env, unset = _env(o)
    caller = caller_cap_masks()
    full = _full_mask()
    sets = bwrap_capabilities(_requested_caps(o, real_uid, caller, full), bool(o.cap_ops) or real_uid != 0,
                              user or o.userns_fd is not None, caller, full)
    if o.disable_userns:
        # vb limits user namespaces in the sandbox's own user namespace (bubblewrap: in one
        # it nests below it): CAP_SYS_RESOURCE there could raise the limit again
        from vbdecl.model.names import CAPABILITIES

        keep = ~(1 << CAPABILITIES["SYS_RESOURCE"])
        sets = {key: mask & keep for key, mask in sets.items()}
    # the manifest's security.capabilities: what the command holds (it cannot say more)
    caps = _cap_lists(set(_mask_names(payload_capabilities(sets, sandbox_uid == 0))))

    namespaces: dict[str, Any] = {
        "user": {"join": f"/proc/self/fd/{o.userns_fd}"} if o.userns_fd is not None else user,
        "pid": o.unshare["pid"],
        "mount": True,
        "uts": o.unshare["uts"],
        "ipc": o.unshare["ipc"],
        "net": o.unshare["net"] or o.net_bridge is not None,
        # bubblewrap: with --unshare-cgroup-try, a cgroup namespace when the kernel has them
        "cgroup": o.unshare["cgroup"] or (o.cgroup_try and os.path.exists("/proc/self/ns/cgroup")),
    }
    if o.pidns_fd is not None:
        # bubblewrap: --pidns FD is joined; with --unshare-pid it is the parent of the new one
        namespaces["pid"] = {"join": f"/proc/self/fd/{o.pidns_fd}"}
        if o.unshare["pid"]:
            namespaces["pid"]["nested"] = True
    network: dict[str, Any] = {
        "mode": "bridge" if o.net_bridge else ("isolated" if namespaces["net"] else "host"),
        "bridge": o.net_bridge or "vbdecl0", "subnet": "10.88.0.0/24" if o.net_bridge else None,
        "subnet6": None, "address": "auto", "address6": None, "nat": bool(o.net_bridge),
        "egress": "auto", "ports": [], "dns": None, "hosts": {}, "mtu": None,
    }
    landlock = None
    if any(o.landlock.values()):
        landlock = {**o.landlock, "ports": {"bind": [], "connect": []}, "optional": False,
                    "try": o.landlock_try}
    limits: dict[str, Any] = {"memory": None, "memory_swap": None, "cpu": None, "cpu_weight": None,
                              "pids": None, "io_weight": None, "rlimits": {}, "optional": False}
    if o.limits:
        from vbdecl.model.names import PID_MAX_LIMIT, RUN_PIDS_FLOOR
        from vbdecl.model.units import UnitError, parse_size

        try:
            if "memory" in o.limits:
                limits["memory"] = parse_size(o.limits["memory"])
        except UnitError as exc:
            meant = f" (did you mean {exc.suggestion}?)" if exc.suggestion else ""
            raise VbUsageError(f"--limit-memory: {exc.message}{meant}") from None
        try:
            if "cpu" in o.limits:
                limits["cpu"] = float(o.limits["cpu"])
            if "pids" in o.limits:
                limits["pids"] = int(o.limits["pids"])
        except ValueError as exc:
            raise VbUsageError(f"invalid limit: {exc}") from None
        # the manifest's bounds (limits in docs/manifest.md)
        if limits["memory"] is not None and not 0 < limits["memory"] < 2**63:
            raise VbUsageError(f"--limit-memory must be above 0 and below 8Ei, not {o.limits['memory']}")
        if limits["cpu"] is not None and not 0.01 <= limits["cpu"] <= 4096:     # (NaN too)
            raise VbUsageError(f"--limit-cpu must be 0.01 to 4096 cores, not {o.limits['cpu']}")
        # (with --unshare-pid, vb's pid 1 and the command both count; --as-pid-1 makes
        # the command pid 1 itself)
        floor = RUN_PIDS_FLOOR if o.unshare["pid"] and not o.as_pid_1 else 1
        if limits["pids"] is not None and not floor <= limits["pids"] <= PID_MAX_LIMIT:
            why = " (the sandbox's pid 1 and the command both count)" if floor > 1 else ""
            raise VbUsageError(f"--limit-pids must be {floor} to {PID_MAX_LIMIT}{why}, not {o.limits['pids']}")

    # bubblewrap (not setuid) sets up as uid 0 of a user namespace it creates when it
    # mounts a devpts (--dev), else as the sandbox's uid (vb: always the latter). Its
    # /proc covers depend on what that uid may write, and access(2) checks a uid other
    # than 0 without capabilities: there vb checks with its effective ids instead.
    setup_as_root = user and o.userns_fd is None and any(
        entry["type"] == "dev" for entry in o.filesystem)
    filesystem = []
    here = _getcwd() if cwd is None else cwd
    for entry in o.filesystem:
        e = _from_cwd(dict(entry), here)
        if e is None:
            continue        # a -try bind of a relative source with no current directory
        e["target"] = _abs_target(e["target"])
        e["parent_mode"] = _parent_mode(e)
        if e["type"] == "proc":
            # bubblewrap binds the host's /proc unless there is a pid namespace of the
            # sandbox's own, and covers these writable corners read-only.
            if not o.unshare["pid"] and o.pidns_fd is None:
                e["host"] = True
            e["cover"] = ["sys", "sysrq-trigger", "irq", "bus"]
            if setup_as_root:
                e["cover_as_root"] = True
        elif e["type"] == "dev":
            e["shm"] = "dir"    # bubblewrap's /dev/shm is a plain directory (0755)
        elif e["type"] == "dir":
            e["keep_mode"] = True   # --perms applies to a directory --dir creates, not to one that exists
        filesystem.append(e)

    spec: dict[str, Any] = {
        "rootfs": None,
        "hostname": o.hostname,
        "namespaces": namespaces,
        "idmap": {"uid": [{"inside": sandbox_uid, "outside": real_uid, "count": 1}],
                  "gid": [{"inside": sandbox_gid, "outside": real_gid, "count": 1}]}
        if user and o.userns_fd is None else None,
        "filesystem": filesystem,
        "limits": limits,
        "network": network,
        "process": {
            "command": list(o.command), "cwd": o.chdir, "env": env, "clear_env": clear,
            "unset_env": unset, "argv0": o.argv0,
            # a joined user namespace without --uid/--gid: the ids the kernel maps ours to there
            "user": None if o.userns_fd is not None and o.uid is None else sandbox_uid,
            "group": None if o.userns_fd is not None and o.gid is None else sandbox_gid,
            "init": not o.as_pid_1, "die_with_parent": o.die_with_parent,
            "new_session": o.new_session, "tty": "auto",
            "inherit_fds": sorted(set(inherit_fds or ()) - consumed_fds(o)),
        },
        "security": {
            "no_new_privs": True,
            "capabilities": caps,
            "seccomp": "off",
            "landlock": landlock,
            "disable_userns": o.disable_userns,
        },
        # --lock-file is bubblewrap's shared fcntl lock, taken by vb's launcher (vb.lock_files)
        "status": {"lock_file": None, "events": None},
        "vb": {
            "info_fd": o.info_fd, "json_status_fd": o.json_status_fd, "sync_fd": o.sync_fd,
            "block_fd": o.block_fd, "userns_block_fd": o.userns_block_fd,
            "seccomp_fds": list(o.seccomp_fds),
            "seccomp_option": "--add-seccomp-fd" if o.used_add_seccomp else "--seccomp",
            "as_pid_1": o.as_pid_1, "pivot": o.pivot,
            "level_prefix": o.level_prefix, "userns_fd": o.userns_fd, "userns2_fd": o.userns2_fd,
            "pidns_fd": o.pidns_fd, "assert_userns_disabled": o.assert_userns_disabled,
            "lock_files": list(o.lock_files), "user_try": o.user_try,
            "cgroup_try": o.cgroup_try and not o.unshare["cgroup"],
            "cwd_fallback": here,
            "net_files": False,     # bubblewrap never binds /etc/resolv.conf
            # bubblewrap's capability sets before exec, which the runtime sets exactly
            "capabilities": {key: _mask_names(mask) for key, mask in sets.items()},
        },
    }
    return {"name": "vb", "labels": {}, "annotations": {}, "source": None, "spec": spec}


_MAX_TMPFS_BYTES = (1 << 63) - 1     # bubblewrap: SIZE_MAX / 2


def _size(text: str) -> int:
    """--size as bubblewrap reads it: strtoull (base 0: 0x.., 0..), digits first, non-zero."""
    bad = VbUsageError("--size takes a non-zero number of bytes")
    if text[:1] not in _DIGITS or not text.isascii():    # (int() reads other scripts' digits)
        raise bad
    try:
        if text[:2].lower() == "0x":
            value = int(text[2:], 16)
        elif text.startswith("0") and len(text) > 1:
            value = int(text[1:], 8)
        else:
            value = int(text, 10)
    except ValueError:
        raise bad from None
    if value == 0 or value >= 1 << 64 or not text.isalnum():
        raise bad
    if value > _MAX_TMPFS_BYTES:
        raise VbUsageError(f"--size (for tmpfs) is limited to {_MAX_TMPFS_BYTES}")
    return value


# bubblewrap's default --perms per option; options that take no --perms count as 0.
_DEFAULT_PERMS = {"dir": 0o755, "tmpfs": 0o755, "file": 0o666, "bind-data": 0o600}


def _parent_mode(e: dict[str, Any]) -> int:
    """bubblewrap's mode for the parents it creates: 0755 without the group bits when
    the entry's mode has none, and without the other bits likewise."""
    perms = e.get("mode")
    if perms is None:
        perms = _DEFAULT_PERMS.get(e["type"], 0)
    mode = 0o755
    if not perms & 0o070:
        mode &= ~0o050
    if not perms & 0o007:
        mode &= ~0o005
    return mode


def _from_cwd(e: dict[str, Any], cwd: str | None) -> dict[str, Any] | None:
    """``e`` with its relative host paths (bind sources, overlay layers) resolved in
    the current directory, as bubblewrap's realpath(3) does (the runtime would take
    them from the host's /). None: an optional bind, and no current directory."""
    def host(path: str) -> str:
        if path.startswith("/"):
            return path
        if cwd is None or not path:     # (realpath("") fails: "" is not the current directory)
            raise VbUsageError(f"Can't find source path {path}: No such file or directory")
        import posixpath  # (os.path: a relative source is rare, and posixpath imports os)

        return posixpath.realpath(os.path.join(cwd, path))

    try:
        if "source" in e and isinstance(e["source"], str) and e["type"] != "symlink":
            e["source"] = host(e["source"])
        if e["type"] in ("overlay", "tmp-overlay", "ro-overlay"):
            e["lower"] = [host(p) for p in e["lower"]]
            if e["type"] == "overlay":
                e["upper"], e["work"] = host(e["upper"]), host(e["work"])
    except VbUsageError:
        if e.get("optional"):
            return None
        raise
    return e


def _abs_target(target: str) -> str:
    # bubblewrap treats every destination as relative to the sandbox root.
    path = os.path.normpath("/" + target.lstrip("/"))
    return "/" if path in ("/", "//") else path


def _getcwd() -> str | None:
    """The current directory as bubblewrap takes it (get_current_dir_name(3)): $PWD when
    it names this directory, which keeps the symlinks the caller went through (a home
    under a link), else the physical path."""
    try:
        here = os.getcwd()
    except OSError:
        return None
    pwd = os.getenv("PWD") or ""
    if pwd.startswith("/") and pwd != here:
        try:
            a, b = os.stat(pwd), os.stat(".")
        except OSError:
            return here
        if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
            return pwd
    return here

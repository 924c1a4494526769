"""Security of the sandboxed process: ids, capabilities, no_new_privs, Landlock, seccomp.

Entry points for the runtime (all take the normalized spec, docs/plan-format.md):

- :func:`preload(spec) <preload>`: imports the modules and reads the data
  files fill_last_step will need (nothing can be imported after pivot_root),
  and prepares the seccomp program, from the cache or built now
  (:func:`prepare_programs`); :func:`load_host_files` calls it.
- :func:`load_host_files(spec) <load_host_files>`: call it in the parent
  (where host paths and the caller's fds are valid). It reads a seccomp
  profile file (``security.seccomp.profile``, a host path) and the raw BPF
  programs of ``vb.seccomp_fds`` into the spec, so that the child needs
  neither the host file nor those fds. Returns a new spec.
- :func:`prepare_in_child(spec) <prepare_in_child>`: optional, call it in the
  child inside its namespaces but before pivot_root when the environment may
  lack ``/proc``, and tell :func:`fill_child_steps` so. It applies
  ``disable_userns`` (which writes ``/proc/sys/user/max_user_namespaces``).
- :func:`fill_last_step(plan, spec) <fill_last_step>` (in the child, or in
  the parent where it has the child's ids and capabilities: it changes
  nothing) and
  :func:`fill_child_steps(plan, spec) <fill_child_steps>` (in the child,
  after the root filesystem is set up): everything is computed and validated
  first (1);
  the process's last steps (:mod:`vbdecl.sys.laststep`, compiled) change the
  kernel state afterwards, right before ``execve``, in the order documented
  in docs/security.md; :func:`failure` says what a failed step means.
  :func:`apply_in_child` does the same here and now, without the exec.

  1. compute capability sets, take the prepared seccomp program (or export
     the filter built now, for a profile named by path), take the raw BPF
     programs (``vb.seccomp_programs``, or ``vb.seccomp_fds`` still open),
     open the Landlock rule paths and fill the ruleset; ``disable_userns``
     (unless done by :func:`prepare_in_child`);
  2. ``vb.assert_userns_disabled``;
  3. PR_SET_KEEPCAPS, setgroups([]), setresgid, setresuid, keepcaps off;
  4. bounding set drops;
  5. no_new_privs;
  6. permitted/effective/inheritable (capset), ambient raises;
  7. Landlock restrict_self;
  8. seccomp (the profile's program, then raw programs) - last.

  When no_new_privs is off, loading Landlock and seccomp needs CAP_SYS_ADMIN:
  it is then held in effective/permitted across steps 7-8 and dropped by one
  final capset right after the filters (the only call after seccomp).

Failures raise (or, for a failed step, :func:`failure` returns)
:class:`~vbdecl.errors.RuntimeSetupError` (exit 125) or
:class:`~vbdecl.errors.SysError` naming the call; the caller reports them.
Best-effort warnings (``landlock.optional``) go to stderr and to
:data:`WARNINGS`.
"""

from __future__ import annotations

import errno
import sys

from vbdecl.errors import RuntimeSetupError
from vbdecl.sys import oslite as os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from vbdecl.sys.laststep import Failure, LastStep

# (__file__ as the import found it: the data directory is beside the package's code
# either way, and realpath would import os on the hot path)
DEFAULT_PROFILE_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                    "data", "seccomp-default.json")

# Calls an allow list always permits: the filter is loaded before execve.
ALLOWLIST_REQUIRED = ("execve", "exit", "exit_group")

WARNINGS: list[str] = []

# bubblewrap's message when the kernel refuses a --seccomp/--add-seccomp-fd program
BWRAP_SECCOMP_EINVAL = ("Unable to set up system call filtering as requested: prctl(PR_SET_SECCOMP) "
                        "reported EINVAL. (Hint: this requires a kernel configured with "
                        "CONFIG_SECCOMP and CONFIG_SECCOMP_FILTER.)")


def _warn(text: str) -> None:
    if text in WARNINGS:
        return          # once per process (two capability sets may be prepared)
    WARNINGS.append(text)
    try:
        os.write(2, f"vbdecl: warning: {text}\n".encode())
    except OSError:
        pass


# --- capabilities -----------------------------------------------------------

def _cap_tables() -> tuple[dict[str, int], tuple[str, ...]]:
    from vbdecl.model.names import CAPABILITIES, DEFAULT_CAPABILITIES

    return CAPABILITIES, DEFAULT_CAPABILITIES


def cap_name(name: str) -> str:
    """``cap_net_raw`` / ``CAP_NET_RAW`` / ``net_raw`` -> ``NET_RAW``; ``all`` -> ``ALL``."""
    n = name.strip().upper()
    return n[4:] if n.startswith("CAP_") else n


def cap_mask(names: list[str] | tuple[str, ...] | set[str], last: int,
             all_mask: int | None = None) -> int:
    """Mask of capability names; ``ALL`` is ``all_mask`` (default: every capability)."""
    table, _ = _cap_tables()
    mask = 0
    for raw in names:
        name = cap_name(raw)
        if name == "ALL":
            mask |= (1 << (last + 1)) - 1 if all_mask is None else all_mask
            continue
        num = table.get(name)
        if num is None:
            raise RuntimeSetupError(f"unknown capability {raw!r}",
                                    hint="use names such as NET_BIND_SERVICE (see capabilities(7))")
        if num > last:
            raise RuntimeSetupError(f"capability {name} is not known to the running kernel "
                                    f"(its last capability is {last})")
        mask |= 1 << num
    return mask


def mask_names(mask: int) -> set[str]:
    table, _ = _cap_tables()
    return {n for n, v in table.items() if mask >> v & 1}


def capability_sets(caps: dict[str, Any] | None, uid: int, last: int,
                    *, disable_userns: bool = False, available: int | None = None) -> tuple[int, int]:
    """(bounding, kept) masks for ``security.capabilities`` and the payload's uid.

    - absent: bounding = the default set; kept = the default set for uid 0,
      nothing for another uid;
    - ``{drop, add}``: start from the default set (empty when ``drop`` holds
      ``ALL``), remove ``drop``, add ``add`` (``ALL`` = every capability).
      uid 0 keeps the result; another uid keeps only what ``add`` names
      (made ambient so it survives exec); the bounding set is the result.
    - ``available`` (the caller's permitted set): ``ALL`` and the default set
      mean what is available; a capability named in ``add`` must be available.
    - disable_userns removes SYS_RESOURCE (it could raise the limit again).
    """
    _, default = _cap_tables()
    avail = (1 << (last + 1)) - 1 if available is None else available
    base = cap_mask(default, last) & avail
    if caps is None:
        bounding = base
        kept = base if uid == 0 else 0
    else:
        drop = [cap_name(n) for n in caps.get("drop") or []]
        add = [cap_name(n) for n in caps.get("add") or []]
        bounding = 0 if "ALL" in drop else base & ~cap_mask(drop, last)
        add_mask = cap_mask(add, last, avail)
        missing = add_mask & ~avail
        if missing:
            raise RuntimeSetupError(
                "security.capabilities.add: this process does not hold " + ", ".join(sorted(mask_names(missing))),
                hint="vbdecl can only keep capabilities it has: run as root, or in a user namespace")
        bounding |= add_mask
        kept = bounding if uid == 0 else add_mask
    if disable_userns:
        table, _ = _cap_tables()
        res = 1 << table["SYS_RESOURCE"]
        if caps is not None and cap_mask([cap_name(n) for n in caps.get("add") or []
                                          if cap_name(n) != "ALL"], last) & res:
            raise RuntimeSetupError(
                "security.disable_userns cannot be kept with capability SYS_RESOURCE",
                hint="SYS_RESOURCE can raise user.max_user_namespaces again: remove it from "
                     "security.capabilities.add")
        bounding &= ~res
        kept &= ~res
    return bounding, kept


# --- seccomp ----------------------------------------------------------------

_default_profile_text: str | None = None


def default_profile() -> dict[str, Any]:
    """A fresh copy of the default profile (the file is read once, see :func:`preload`)."""
    import json  # here: a run whose seccomp program is cached does without json (~4 ms)

    global _default_profile_text
    if _default_profile_text is None:
        with open(DEFAULT_PROFILE_PATH) as f:
            _default_profile_text = f.read()
    profile: dict[str, Any] = json.loads(_default_profile_text)
    return profile


def _expand(names: list[str]) -> list[str]:
    """Expand ``@groups``; check every name a person wrote.

    A name unknown to Linux (names.SYSCALLS) is an error; a real call the
    installed libseccomp cannot resolve is skipped with a warning (it is newer
    than libseccomp); so are group members unknown on this architecture.
    """
    from vbdecl.model.names import SYSCALL_GROUPS, SYSCALLS
    from vbdecl.sys.seccomp import known_syscall

    out: list[str] = []
    for n in names:
        if n.startswith("@"):
            if n not in SYSCALL_GROUPS:
                raise RuntimeSetupError(f"unknown system call group {n!r}",
                                        hint="known groups: " + ", ".join(sorted(SYSCALL_GROUPS)))
            out += [m for m in SYSCALL_GROUPS[n] if known_syscall(m)]
            continue
        if not known_syscall(n):
            if n not in SYSCALLS:
                raise RuntimeSetupError(f"unknown system call {n!r}", hint="check the spelling")
            _warn(f"security.seccomp: libseccomp does not know {n!r} (newer than the installed "
                  "libseccomp); it is not filtered")
            continue
        out.append(n)
    return list(dict.fromkeys(out))


def _read_profile(path: str, text: str | None = None) -> dict[str, Any]:
    """The profile at ``path``, or ``text``: its content when a live environment's plan
    pinned it (engine.sources.pin_file_sources), which its process and execs go by."""
    import json

    try:
        if text is not None:
            data = json.loads(text)
        else:
            with open(path) as f:
                data = json.load(f)
    except OSError as e:
        raise RuntimeSetupError(f"cannot read the seccomp profile {path}: {e.strerror}",
                                hint="check security.seccomp.profile; the path is on the host") from None
    except json.JSONDecodeError as e:
        raise RuntimeSetupError(f"{path}:{e.lineno}:{e.colno}: the seccomp profile is not valid JSON: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise RuntimeSetupError(f"{path}: the seccomp profile is not UTF-8 text (byte {e.start})",
                                hint="a profile is JSON in the OCI/Docker format") from None
    if not isinstance(data, dict):
        raise RuntimeSetupError(f"{path}: a seccomp profile is a JSON object with defaultAction and syscalls")
    return data


def seccomp_profile(setting: Any, *, extra_allow: tuple[str, ...] = ()) -> tuple[dict[str, Any] | None, bool]:
    """(profile in OCI format or None, strict names) for ``security.seccomp``.

    - ``"off"``/None: no filter; ``"default"``: the default profile;
    - ``{"profile": path}`` (``profile_data``: the parsed file, if pre-read);
    - ``{"allow": [...], "errno": E}``: only these calls (groups expanded),
      everything else fails with E (EPERM);
    - ``{"deny": [...], "errno": E}``: the default profile plus these calls,
      which fail with E (EPERM).
    """
    if setting in (None, "off", False):
        return None, False
    if setting in ("default", True):
        return default_profile(), False
    if not isinstance(setting, dict):
        raise RuntimeSetupError(f"security.seccomp: unsupported value {setting!r}",
                                hint="use off, default, {profile: FILE}, {allow: [...]} or {deny: [...]}")
    from vbdecl.sys.seccomp import errno_number

    err = errno_number(setting.get("errno") or "EPERM")
    if setting.get("profile_data") is not None:
        return dict(setting["profile_data"]), False
    if setting.get("profile"):
        return _read_profile(str(setting["profile"]), setting.get("profile_text")), False
    base = default_profile()
    if setting.get("allow") is not None:
        names = _expand(list(setting["allow"])) + [n for n in (*ALLOWLIST_REQUIRED, *extra_allow)]
        return {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": err,
                "archMap": base.get("archMap"),
                "syscalls": [{"names": list(dict.fromkeys(names)), "action": "SCMP_ACT_ALLOW"}]}, False
    if setting.get("deny") is not None:
        deny = _expand(list(setting["deny"]))
        gone = set(deny)
        syscalls = [{"names": deny, "action": "SCMP_ACT_ERRNO", "errnoRet": err}]
        for rule in base.get("syscalls") or []:
            syscalls.append({**rule, "names": [n for n in rule["names"] if n not in gone]})
        base["syscalls"] = syscalls
        return base, False
    return base, False


def preload(spec: dict[str, Any]) -> None:
    """Import and read now everything fill_last_step needs for ``spec``.

    After pivot_root vbdecl's own files (and the interpreter's stdlib) are
    usually not in the new root, so nothing may be imported or read lazily
    there. Called by :func:`load_host_files` (in the parent, so forked
    children inherit it) and safe to call again (cheap when done).
    """
    from vbdecl.sys import caps as _caps  # noqa: F401

    _cap_tables()
    sec = spec.get("security") or {}
    if sec.get("seccomp", "default") not in (None, "off", False):
        prepare_programs(spec)
    if (spec.get("vb") or {}).get("seccomp_fds") or (spec.get("vb") or {}).get("seccomp_programs"):
        from vbdecl.sys import seccomp as _ssc  # noqa: F401
    if sec.get("landlock"):
        from vbdecl.runtime import rootfs as _rootfs  # noqa: F401  (its rule paths: fence_of)

        if landlock_handles_tcp(spec):
            _sockets_program()


def load_host_files(spec: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``spec`` with host-side inputs read in, for the child.

    - ``security.seccomp.profile`` (a host path) -> ``profile_data``;
    - ``vb.seccomp_fds`` (fds of the caller) -> ``vb.seccomp_programs``
      (hex strings; the fds are read to EOF and closed), so that the child
      does not depend on fds that are closed before exec.
    """
    sec = spec.get("security") or {}
    setting = sec.get("seccomp")
    if isinstance(setting, dict) and setting.get("profile") and setting.get("profile_data") is None:
        data = _read_profile(str(setting["profile"]), setting.get("profile_text"))
        spec = {**spec, "security": {**sec, "seccomp": {**setting, "profile_data": data}}}
    preload(spec)   # with the profile read: its program is prepared here, not in the sandbox
    vb = spec.get("vb") or {}
    if vb.get("seccomp_fds"):
        from vbdecl.sys.seccomp import read_bpf_fd

        programs = list(vb.get("seccomp_programs") or [])
        programs += [read_bpf_fd(fd).hex() for fd in vb["seccomp_fds"]]
        spec = {**spec, "vb": {**vb, "seccomp_fds": [], "seccomp_programs": programs}}
    return spec


# --- Landlock ---------------------------------------------------------------

def landlock_ruleset(cfg: dict[str, Any] | None, fenced: list[str] | None = None) -> int | None:
    """Create and fill the ruleset (paths resolved in the current root, following no
    symlink below the directories ``fenced``: writable_targets); fd or None."""
    if not cfg:
        return None
    from vbdecl.sys import landlock as ll

    optional = bool(cfg.get("optional"))
    abi = ll.abi_version()
    if abi < 1:
        if optional:
            _warn("Landlock is not available in this kernel; security.landlock is skipped "
                  "(optional: true)")
            return None
        raise RuntimeSetupError("Landlock is not available in this kernel",
                                hint="use Linux >= 5.13 with Landlock enabled (lsm=...,landlock), or "
                                     "set security.landlock.optional: true for best effort")
    ports = cfg.get("ports") or {}
    handled_net = ll.net_rights(abi)
    if not handled_net and (ports.get("bind") or ports.get("connect")):
        if not optional:
            raise RuntimeSetupError(f"Landlock port rules need ABI 4 (Linux 6.7); this kernel has ABI {abi}",
                                    hint="remove security.landlock.ports, or set security.landlock.optional: true")
        _warn(f"Landlock ABI {abi} has no port rules; security.landlock.ports is skipped")
    fs_all = ll.fs_rights(abi)
    read = ll.READ_FILE | ll.READ_DIR
    write = (ll.WRITE_FILE | ll.REMOVE_DIR | ll.REMOVE_FILE | ll.MAKE_CHAR | ll.MAKE_DIR
             | ll.MAKE_REG | ll.MAKE_SOCK | ll.MAKE_FIFO | ll.MAKE_BLOCK | ll.MAKE_SYM
             | ll.REFER | ll.TRUNCATE | ll.IOCTL_DEV)
    execute = ll.EXECUTE | ll.READ_FILE
    rules: list[tuple[str, int, str]] = []
    for key, mask in (("read", read), ("write", write), ("read_write", read | write),
                      ("execute", execute)):
        for i, path in enumerate(cfg.get(key) or []):
            rules.append((str(path), mask & fs_all, f"security.landlock.{key}[{i}]"))
    fd = ll.create_ruleset(fs_all, handled_net, ll.scopes(abi))
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        from vbdecl.runtime.rootfs import fence_of, resolve

        # (no symlink below them: the process could have made one there on an earlier
        # run, or through an exec into a live environment, to have a rule grant more;
        # a security review turned read: [/data/pub] into read access to / so)
        fence = fence_of(root, fenced or [])
        for path, mask, where in rules:
            ll.add_path_rule(fd, path, mask, lambda p: resolve(root, p, os.O_PATH, fence=fence),
                             where=where)
        if handled_net:
            for port in ports.get("bind") or []:
                ll.add_port_rule(fd, int(port), ll.BIND_TCP)
            for port in ports.get("connect") or []:
                ll.add_port_rule(fd, int(port), ll.CONNECT_TCP)
    except BaseException:
        os.close(fd)
        raise
    finally:
        os.close(root)
    return fd


def writable_targets(spec: dict[str, Any]) -> list[str]:
    """Where, inside the environment, its process can write what a later run (or a
    later exec into a live environment) finds: the targets of rw binds and overlays
    with an upper directory, / for a rootfs, the targets of other mounts whose host
    source is below one of those (a second review exposed a writable bind's
    subdirectory through a ro-bind), and Landlock's own writable paths."""
    from vbdecl.runtime.rootfs import sandbox_writable

    writable = sandbox_writable(spec)

    def below(path: str) -> bool:
        path = os.path.normpath(path)
        return any(path == w or path.startswith(w.rstrip("/") + "/") for w in writable)

    found = ["/"] if spec.get("rootfs") else []
    for e in spec.get("filesystem") or []:
        kind = e.get("type")
        if kind in ("bind", "dev-bind") or (kind == "overlay" and e.get("upper")) \
                or (kind == "ro-bind" and e.get("source") and below(str(e["source"]))) \
                or (kind in ("overlay", "ro-overlay", "tmp-overlay")
                    and any(below(str(lower)) for lower in e.get("lower") or [])):
            found.append(str(e["target"]))
    landlock = (spec.get("security") or {}).get("landlock") or {}
    found += [str(p) for key in ("write", "read_write") for p in landlock.get(key) or []]
    return sorted(set(found), key=len)


# --- privileges and compiled seccomp programs -----------------------------------

def privileges(spec: dict[str, Any], available: int | None = None) -> tuple[int, int, int, int]:
    """(last capability, bounding, kept, hold) for the payload of ``spec``.

    ``available``: the permitted set the payload starts from (default: this
    process's). ``hold`` is CAP_SYS_ADMIN when it must stay effective until
    the filters are loaded (no_new_privs off), else 0.
    """
    from vbdecl.sys import caps as sc

    sec = spec.get("security") or {}
    vb = spec.get("vb") or {}
    uid = int((spec.get("process") or {}).get("user") or 0)
    last = sc.last_cap()
    exact = vb.get("capabilities")
    if exact is not None:
        # vb: the sets bubblewrap would leave (worked out by vbdecl.vb.parse), as they are
        bounding, kept = cap_mask(exact["bounding"], last), cap_mask(exact["permitted"], last)
    else:
        bounding, kept = capability_sets(sec.get("capabilities"), uid, last,
                                         disable_userns=bool(sec.get("disable_userns")),
                                         available=sc.capget()[1] if available is None else available)
    needs_nnp_or_admin = (bool(sec.get("landlock")) or bool(vb.get("seccomp_fds"))
                          or bool(vb.get("seccomp_programs"))
                          or sec.get("seccomp", "default") not in (None, "off", False))
    sys_admin = 1 << 21
    nnp = bool(sec.get("no_new_privs", True))
    hold = sys_admin if (not nnp and needs_nnp_or_admin and not kept & sys_admin) else 0
    return last, bounding, kept, hold


# Building a seccomp filter means parsing the JSON profile and having libseccomp
# generate the program: ~10 ms of every start-up. The program is a function of
# what _program_key covers, so it is built once per machine, kept in the cache
# directory, and a run installs the bytes (prctl, as for vb's raw programs).
_programs: dict[str, bytes] = {}    # key -> program; filled by preload, before pivot_root
PROGRAMS_KEPT = 128                 # cache entries (settings x capability sets x versions)


def seccomp_filters(spec: dict[str, Any], kept: int, hold: int) -> tuple[Any, list[bytes]]:
    """(a libseccomp filter to load, or None; raw programs to install after it):
    the profile's program prepared by :func:`prepare_programs` when there is one,
    then vb's programs."""
    sec = spec.get("security") or {}
    vb = spec.get("vb") or {}
    setting = sec.get("seccomp", "default")
    key = _program_key(setting, kept, hold)
    program = _programs.get(key or "")
    filt = None
    if program is None:
        try:
            filt = _build_filter(setting, kept, hold)
        except (ImportError, OSError) as exc:
            if key is None:
                raise
            # after pivot_root nothing can be loaded: preload must have prepared it
            raise RuntimeSetupError(
                f"security.seccomp: the program for this capability set was not prepared "
                f"before the root changed ({exc})",
                hint="this is a bug in vbdecl; set security.seccomp: off to run meanwhile") from None
    raw = [program] if program else []
    if landlock_handles_tcp(spec):
        raw.append(_sockets_program())      # (prepared by preload, before the root changes)
    raw += [bytes.fromhex(p) for p in vb.get("seccomp_programs") or []]
    if vb.get("seccomp_fds"):
        from vbdecl.sys import seccomp as ssc

        raw += [ssc.read_bpf_fd(fd) for fd in vb["seccomp_fds"]]
    return filt, raw


_inputs: str | None = None


def _machine_inputs() -> str | None:
    """What a program depends on besides the spec: vbdecl's code that builds it and
    its tables, the default profile file (allow and deny lists build on it too),
    the architecture and the kernel. Read once, before pivot_root."""
    global _inputs
    if _inputs is None:
        from vbdecl import __version__
        from vbdecl.engine.cachefile import code_fingerprint

        try:
            st = os.stat(DEFAULT_PROFILE_PATH)
        except OSError:
            return None
        kernel = os.uname()
        code = code_fingerprint("ops/sec.py", "sys/seccomp.py", "model/names.py")
        _inputs = "\0".join((__version__, code, f"{st.st_size}:{st.st_mtime_ns}", kernel.machine,
                              kernel.release))
    return _inputs


def _program_key(setting: Any, kept: int, hold: int) -> str | None:
    """The cache key of the seccomp program for these inputs, or None when it is
    not cached (no filter; a profile file read in the child, which may change)."""
    if setting in (None, "off", False):
        return None
    if isinstance(setting, dict):
        if setting.get("profile") and setting.get("profile_data") is None:
            return None
        import json

        what = json.dumps(setting, sort_keys=True, separators=(",", ":"))
    elif setting in ("default", True):
        what = "default"
    else:
        return None
    from vbdecl.hashing import sha256

    machine = _machine_inputs()
    if machine is None:
        return None
    parts = ("vbdecl-seccomp", machine, what, str(kept), str(hold))
    key: str = sha256("\0".join(parts).encode("utf-8", "surrogateescape")).hexdigest()
    return key


def _program_path(key: str) -> str:
    from vbdecl.engine.paths import cache_dir

    return os.path.join(cache_dir(), "seccomp", key + ".marshal")


def prepare_programs(spec: dict[str, Any]) -> None:
    """Have the seccomp program the process will install ready in memory: from
    the cache, else built now (and cached). Call it before pivot_root.

    The payload's permitted set is this process's, or every capability when it
    enters a user namespace on the way (exec into an environment that has one):
    both programs are prepared. A setting that is not cached gets its inputs
    loaded instead, and fill_last_step builds the filter then.
    """
    from vbdecl.sys import caps as sc

    sec = spec.get("security") or {}
    setting = sec.get("seccomp", "default")
    full = (1 << (sc.last_cap() + 1)) - 1
    for available in dict.fromkeys((sc.capget()[1], full)):
        try:
            _, _, kept, hold = privileges(spec, available)
        except RuntimeSetupError:
            continue      # not what the payload will have; fill_last_step says why if it is
        key = _program_key(setting, kept, hold)
        if key is None:
            from vbdecl.model import names as _names  # noqa: F401
            from vbdecl.sys import seccomp as ssc

            ssc.binding()
            default_profile()
            return
        if key not in _programs:
            _programs[key] = _cached_program(key) or _build_program(setting, kept, hold, key)


def _cached_program(key: str) -> bytes | None:
    from vbdecl.engine import cachefile
    from vbdecl.sys import seccomp as ssc

    entry = cachefile.read(_program_path(key), key)
    if entry is None:
        return None
    program = entry.get("program")
    if not isinstance(program, bytes) or not program or len(program) % 8 \
            or not ssc.library_unchanged(entry.get("lib")):
        return None
    for text in entry.get("warnings") or []:
        _warn(str(text))
    return program


def _build_filter(setting: Any, kept: int, hold: int) -> Any:
    """The libseccomp filter of ``setting`` for the kept capabilities, or None (no filter)."""
    profile, strict = seccomp_profile(setting, extra_allow=("capset",) if hold else ())
    if profile is None:
        return None
    from vbdecl.sys import seccomp as ssc

    path = setting.get("profile") if isinstance(setting, dict) else None
    # (a profile file's errors name the file and its item, and the key that named it)
    where = f"{path} (security.seccomp.profile)" if path else "security.seccomp"
    return ssc.build_filter(profile, caps=mask_names(kept), strict_names=strict, where=where)


# Landlock's TCP rights cover TCP sockets only: an MPTCP (or SMC) socket binds and
# connects past them (a security review did, on Linux 6.18). Where Landlock handles
# TCP, a filter of its own refuses to make one (socket() with IPPROTO_MPTCP or
# IPPROTO_SMC, or AF_SMC), and io_uring, which makes sockets without socket().
# Compared as 32-bit ints, as the kernel reads them (a review set the high bits of an
# argument past a 64-bit compare); for the native ABI and x32 only: an i386 process
# reaches socket() through socketcall, whose arguments no filter can see, and
# refusing that would leave it no socket at all, so it is let be (docs/security.md).
_IPPROTO_MPTCP, _IPPROTO_SMC, _AF_SMC = 262, 256, 43
LANDLOCK_SOCKET_RULES = ((2, _IPPROTO_MPTCP), (2, _IPPROTO_SMC), (0, _AF_SMC))


def _sockets_filter() -> Any:
    from vbdecl.sys import seccomp as ssc

    s = ssc.binding()
    filt = s.SyscallFilter(s.ALLOW)
    filt.set_attr(s.Attr.CTL_NNP, 0)            # (the caller sets no_new_privs)
    filt.set_attr(s.Attr.ACT_BADARCH, s.ALLOW)   # (i386: see above)
    if ssc.native_arch() == "x86_64" and not filt.exist_arch(s.Arch.X32):
        filt.add_arch(s.Arch.X32)
    refuse = s.ERRNO(errno.EACCES)
    for index, value in LANDLOCK_SOCKET_RULES:
        filt.add_rule(refuse, "socket", s.Arg(index, s.MASKED_EQ, 0xFFFFFFFF, value))
    filt.add_rule(refuse, "io_uring_setup")
    return filt


def landlock_handles_tcp(spec: dict[str, Any]) -> bool:
    """Whether the process gets a Landlock ruleset that handles TCP (ABI >= 4)."""
    if not (spec.get("security") or {}).get("landlock"):
        return False
    from vbdecl.sys import landlock as ll

    return bool(ll.net_rights(ll.abi_version()))


def _sockets_key() -> str | None:
    from vbdecl.hashing import sha256

    machine = _machine_inputs()
    if machine is None:
        return None
    key: str = sha256(f"vbdecl-landlock-sockets\0{machine}".encode("utf-8", "surrogateescape")).hexdigest()
    return key


def _sockets_program() -> bytes:
    """_sockets_filter as a program: from memory or the cache, else built."""
    key = _sockets_key()
    program = _programs.get(key or "")
    if program is not None:
        return program
    program = _cached_program(key) if key else None
    if program is None:
        from vbdecl.sys import seccomp as ssc

        try:
            program = ssc.export_bpf(_sockets_filter())
        except RuntimeSetupError as exc:
            raise RuntimeSetupError(
                f"Landlock's socket filter (it refuses MPTCP and SMC sockets, which pass Landlock's "
                f"port rules) cannot be built: {exc.message}",
                hint="install python3-seccomp (apt-get install python3-seccomp), or leave out "
                     "security.landlock") from None
        if key:
            _store_program(key, program, [])
    if key:
        _programs[key] = program
    return program


def _build_program(setting: Any, kept: int, hold: int, key: str) -> bytes:
    from vbdecl.sys import seccomp as ssc

    first_warning = len(WARNINGS)
    filt = _build_filter(setting, kept, hold)
    assert filt is not None
    program = ssc.export_bpf(filt)
    if not program or len(program) % 8:
        raise RuntimeSetupError(f"security.seccomp: libseccomp exported a {len(program)}-byte "
                                "program, not whole instructions")
    _store_program(key, program, WARNINGS[first_warning:])
    return program


def _store_program(key: str, program: bytes, warnings: list[str]) -> None:
    """Keep ``program`` in the cache under ``key`` (read back by _cached_program)."""
    from vbdecl.engine import cachefile
    from vbdecl.sys import seccomp as ssc

    path = _program_path(key)
    if cachefile.write(path, {"key": key, "program": program, "lib": ssc.library_identity(),
                              "warnings": warnings}):
        cachefile.prune(os.path.dirname(path), PROGRAMS_KEPT)


def bwrap_program(spec: dict[str, Any]) -> bytes | None:
    """The program of ``spec``'s seccomp profile for bubblewrap's ``--seccomp`` (which
    installs it right before the exec, with no_new_privs, as vbdecl does): the one a
    run installs for the capabilities the process keeps. None with seccomp off."""
    from vbdecl.sys import seccomp as ssc

    _, _, kept, _ = privileges(spec)
    filt = _build_filter((spec.get("security") or {}).get("seccomp", "default"), kept, 0)
    return None if filt is None else bytes(ssc.export_bpf(filt))


# --- user namespaces ----------------------------------------------------------

def could_trace_into_pid1(spec: dict[str, Any]) -> bool:
    """Whether the process of ``spec``, run without a user namespace of its own,
    could get more than it has through its pid 1: CAP_SYS_PTRACE lets it into pid
    1 and into what pid 1 shares memory with (a shared child: vbdecl, outside
    every namespace). Not when it holds CAP_SYS_ADMIN of this user namespace
    anyway: that mounts a devtmpfs, and the host's disks from it. A capability
    counts when kept, or in the bounding set without no_new_privs (a root or
    file-capability exec could gain it)."""
    sys_ptrace, sys_admin = 1 << 19, 1 << 21
    _, bounding, kept, _ = privileges(spec)
    nnp = bool((spec.get("security") or {}).get("no_new_privs", True))
    return bool((kept if nnp else bounding | kept) & sys_ptrace) and not kept & sys_admin


def live_ptrace_problem(spec: dict[str, Any]) -> dict[str, str] | None:
    """What a live environment of ``spec`` cannot have (``vbdecl run`` can): a process
    that may hold CAP_SYS_PTRACE of the host's user namespace (no user namespace of its
    own; :func:`could_trace_into_pid1`). `vbdecl exec` and the restart of the process
    bring in helpers that hold the host's privileges until the command starts, in the
    environment's pid namespace, where that process can attach to them: a security
    review ran code as the host's root through one. Only for root: any other caller's
    environment is in a user namespace of its own, whatever the manifest says (and its
    capabilities are checked against what it holds when it starts). A joined user
    namespace may be the host's. Not with CAP_SYS_ADMIN kept: that is the host's root
    already (:func:`could_trace_into_pid1`). ``{"where", "message", "hint"}``, or None."""
    from vbdecl.errors import RuntimeSetupError

    if os.geteuid() != 0 or (spec.get("namespaces") or {}).get("user") is True:
        return None
    try:
        if not could_trace_into_pid1(spec):
            return None
        kept = privileges(spec)[2] & (1 << 19)
    except RuntimeSetupError:
        return None     # (a capability this caller does not hold: the start says so)
    sec = spec.get("security") or {}
    return {"where": "security.capabilities" if kept or "capabilities" in sec else "security.no_new_privs",
            "message": "a live environment's process may not hold CAP_SYS_PTRACE without a user namespace "
                       + ("(security.capabilities keeps it)" if kept else
                          "(no_new_privs: false lets an exec gain it)")
                       + ": it could take over `vbdecl exec` and the restarts of its process, which "
                         "enter its pid namespace with the host's privileges",
            "hint": "set namespaces.user: true (the capability then holds in the environment's user "
                    "namespace only), or drop SYS_PTRACE; vbdecl run has no such helpers, and allows it"}


def prepare_in_child(spec: dict[str, Any], proc_dir: int | None = None) -> None:
    """Apply ``security.disable_userns`` (needs /proc, or ``proc_dir``, an fd of the
    host's, kept by a process that entered a live environment, whose own /proc may
    be read-only or missing; idempotent: the limit is 0 after the first time). No
    state of ours says it was done: the module may be a parent's that runs many
    sandboxes (a shared child, see vbdecl.runtime.spawn)."""
    sec = spec.get("security") or {}
    if not sec.get("disable_userns"):
        return
    from vbdecl.sys import caps as sc

    ns = (spec.get("namespaces") or {}).get("user")
    if not ns:
        raise RuntimeSetupError("security.disable_userns needs namespaces.user",
                                hint="set namespaces.user: true (the limit is set in the environment's "
                                     "own user namespace, never on the host)")
    if sc.in_initial_user_ns(proc_dir):
        raise RuntimeSetupError(
            "security.disable_userns: refusing to change user.max_user_namespaces: this process is "
            "not in a user namespace of its own (or /proc is not mounted)",
            hint="call it inside the environment's user namespace, with /proc visible")
    sc.set_max_user_namespaces(0, proc_dir)


# --- the whole sequence -------------------------------------------------------

class Prepared:
    """What :func:`fill_last_step` works out before it changes anything."""

    __slots__ = ("ambient", "drop", "filt", "hold", "inheritable", "kept", "last", "raw")

    def __init__(self, last: int, kept: int, hold: int, filt: Any, raw: list[bytes],
                 drop: list[int], inheritable: int, ambient: int) -> None:
        self.last = last            # the highest capability the kernel knows
        self.kept = kept            # the payload's capabilities (permitted and effective)
        self.inheritable = inheritable
        self.ambient = ambient      # to raise (each must be kept and inheritable)
        self.hold = hold            # CAP_SYS_ADMIN until the filters are loaded, or 0
        self.filt = filt            # a libseccomp filter to load, or None
        self.raw = raw              # seccomp programs to install after it
        self.drop = drop            # capabilities to drop from the bounding set (if there)


def prepare_process(spec: dict[str, Any], *, userns_switch: bool = False) -> Prepared:
    """What :func:`fill_last_step` computes before it changes anything. It needs
    neither the new root nor the final user namespace. It reads no files.

    ``userns_switch``: the process will join another user namespace first (vb's
    --userns2), where the kernel gives it every capability and a full bounding set.
    """
    from vbdecl.sys import caps as sc

    if userns_switch:
        full = (1 << (sc.last_cap() + 1)) - 1
        last, bounding, kept, hold = privileges(spec, available=full)
    else:
        last, bounding, kept, hold = privileges(spec)
    exact = (spec.get("vb") or {}).get("capabilities")
    if exact is not None:
        # vb: bubblewrap's inheritable and ambient sets (its capset and ambient raises)
        inheritable, ambient = cap_mask(exact["inheritable"], last), cap_mask(exact["ambient"], last)
    else:
        # a uid other than 0 keeps its capabilities across exec only as ambient ones
        uid = int((spec.get("process") or {}).get("user") or 0)
        inheritable = ambient = kept if uid != 0 else 0
    filt, raw = seccomp_filters(spec, kept, hold)
    drop = [cap for cap in range(last + 1) if not bounding >> cap & 1]   # those it has, that is
    return Prepared(last, kept, hold, filt, raw, drop, inheritable, ambient)


def fill_last_step(plan: LastStep, spec: dict[str, Any], *, userns_switch: bool = False) -> None:
    """Step 1 of the module docstring but what needs the new root (compute, take the
    programs); the others go into ``plan``, for vbdecl.sys.laststep to make. Changes
    nothing: the parent may call it for its pid 1 (same ids and capabilities)."""
    sec = spec.get("security") or {}
    proc = spec.get("process") or {}
    p = prepare_process(spec, userns_switch=userns_switch)
    programs = list(p.raw)
    if p.filt is not None:
        from vbdecl.sys import seccomp as ssc

        programs.insert(0, ssc.export_bpf(p.filt))
    plan.security = True
    plan.assert_userns_disabled = bool((spec.get("vb") or {}).get("assert_userns_disabled"))
    # None (vb --userns without --uid/--gid): -1, which setresuid/setresgid leave as they are
    plan.uid = -1 if proc.get("user") is None else int(proc["user"])
    plan.gid = -1 if proc.get("group") is None else int(proc["group"])
    plan.no_new_privs = bool(sec.get("no_new_privs", True))
    plan.kept, plan.hold, plan.inheritable, plan.ambient = p.kept, p.hold, p.inheritable, p.ambient
    plan.drop = list(p.drop)
    plan.seccomp = programs


def fill_child_steps(plan: LastStep, spec: dict[str, Any], *, userns_done: bool = False) -> None:
    """The rest of step 1, in the process that spawns or becomes the payload, in the
    new root: ``disable_userns`` (unless ``userns_done``: the caller ran
    :func:`prepare_in_child`) and the Landlock ruleset, whose rule paths are
    opened there. ``plan.landlock`` is a new fd (the caller closes its copy after
    a spawn)."""
    if not userns_done:
        prepare_in_child(spec)
    landlock = (spec.get("security") or {}).get("landlock")
    ruleset = landlock_ruleset(landlock, writable_targets(spec) if landlock else None)
    plan.landlock = -1 if ruleset is None else ruleset


def failure(spec: dict[str, Any], plan: LastStep, failed: Failure) -> Exception | None:
    """The error a failed security step of ``plan`` means (None: not a security step)."""
    from vbdecl.sys import caps as sc
    from vbdecl.sys import laststep as ls
    from vbdecl.sys.raw import sys_error

    step, index, err = failed.step, failed.index, failed.errno
    if step == ls.ASSERT_USERNS:
        # bubblewrap's words (vb prints the message only)
        return RuntimeSetupError("creation of new user namespaces was not disabled as requested",
                                 hint="--assert-userns-disabled: use --disable-userns, or run where "
                                      "user namespaces are disabled")
    if step == ls.HOLD:
        return RuntimeSetupError(
            "no_new_privs is off but the process lacks CAP_SYS_ADMIN, which loading seccomp or "
            "Landlock then needs", hint="set security.no_new_privs: true")
    if step == ls.SECCOMP:
        if err == errno.EINVAL and "vb" in spec:
            return RuntimeSetupError(BWRAP_SECCOMP_EINVAL)    # bubblewrap's words
        if err == errno.EINVAL:     # (a crash review's damaged cache entry said no more)
            where = os.path.dirname(_program_path("x"))
            return sys_error("prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER)", err,
                             hint=f"the kernel refused the seccomp program; vbdecl keeps the programs it "
                                  f"compiled in {where}: remove that directory to compile them again")
        return sys_error("prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER)", err,
                         hint="seccomp needs no_new_privs or CAP_SYS_ADMIN")
    if step == ls.CAPSET:
        eff = prm = plan.kept | (plan.hold if index == 1 else 0)
        what = ("capset(the permitted set after the id change)" if index == 0 else
                f"capset(effective={eff:#x}, permitted={prm:#x}, inheritable={plan.inheritable:#x})")
        return sys_error(what, err, hint="a capability can only be kept if the process holds it "
                                         "(permitted set); run as root or in a user namespace")
    if step == ls.LANDLOCK:
        return sys_error("landlock_restrict_self", err, hint="Landlock needs no_new_privs "
                         "(security.no_new_privs: true) or CAP_SYS_ADMIN")
    calls = {
        ls.CAPGET: "capget",
        ls.KEEPCAPS: f"prctl(PR_SET_KEEPCAPS, {index})",
        ls.SETGROUPS: "setgroups([])",
        ls.SETRESGID: f"setresgid({index}, {index}, {index})",
        ls.SETRESUID: f"setresuid({index}, {index}, {index})",
        ls.BOUNDING: f"prctl(PR_CAPBSET_DROP, {index})",
        ls.NO_NEW_PRIVS: "prctl(PR_SET_NO_NEW_PRIVS, 1)",
        ls.AMBIENT: ("prctl(PR_CAP_AMBIENT_CLEAR_ALL)" if index < 0
                     else f"prctl(PR_CAP_AMBIENT_RAISE, {index})"),
    }
    if step not in calls:
        return None
    hint = None
    if step in (ls.SETRESGID, ls.SETRESUID):
        hint = _joined_map_hint(spec, "gid" if step == ls.SETRESGID else "uid", index) or sc.map_hint()
    return sys_error(calls[step], err, hint=hint)


def _joined_map_hint(spec: dict[str, Any], kind: str, index: int) -> str | None:
    """Why the id change fails in a user namespace the environment joins (EINVAL: the id
    is not mapped there; vbdecl cannot check that before, as it does its own idmap)."""
    user = (spec.get("namespaces") or {}).get("user")
    if not (isinstance(user, dict) and user.get("join")):
        return None
    path = str(user["join"])
    maps = f"{path[:-len('/ns/user')]}/{kind}_map" if path.endswith("/ns/user") else f"its {kind}_map"
    if "vb" in spec:
        return (f"{kind} {index} is not mapped in the user namespace joined with --userns: give "
                f"--uid and --gid that are mapped there ({maps} lists them)")
    return (f"{kind} {index} is not mapped in the joined user namespace ({path}): set "
            f"process.user and process.group to ids mapped there ({maps} lists them; both "
            "default to 0)")


def apply_in_child(spec: dict[str, Any]) -> None:
    """Drop to the payload's ids and privileges here, seccomp last; raises on failure."""
    from vbdecl.sys import laststep as ls

    plan = ls.LastStep()
    fill_last_step(plan, spec)
    fill_child_steps(plan, spec)
    try:
        failed = ls.exec_in_place(plan)
    finally:
        if plan.landlock >= 0:
            os.close(plan.landlock)     # (enforced on us already, or never)
    if failed is not None:
        raise failure(spec, plan, failed) or RuntimeSetupError(f"security step failed: {failed}")


def describe(spec: dict[str, Any]) -> dict[str, Any]:
    """What the security steps would do, as plain data (for plan output and doctor)."""
    from vbdecl.sys import caps as sc

    sec = spec.get("security") or {}
    uid = int((spec.get("process") or {}).get("user") or 0)
    last = sc.last_cap()
    bounding, kept = capability_sets(sec.get("capabilities"), uid, last,
                                     disable_userns=bool(sec.get("disable_userns")))
    return {"uid": uid, "bounding": sorted(mask_names(bounding)), "kept": sorted(mask_names(kept)),
            "ambient": sorted(mask_names(kept)) if uid != 0 else [],
            "no_new_privs": bool(sec.get("no_new_privs", True)),
            "seccomp": sec.get("seccomp", "default"), "landlock": sec.get("landlock"),
            "disable_userns": bool(sec.get("disable_userns"))}


if __name__ == "__main__":  # pragma: no cover - debugging aid
    import json

    json.dump(describe({"security": {}, "process": {"user": int(sys.argv[1]) if len(sys.argv) > 1 else 0}}),
              sys.stdout, indent=2)

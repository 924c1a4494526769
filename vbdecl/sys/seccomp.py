"""seccomp: filters built with libseccomp, and raw classic-BPF programs from fds.

Filters are built with libseccomp's official Python binding (Debian's
``python3-seccomp``). A virtualenv does not see Debian's dist-packages, so
when ``import seccomp`` fails, :func:`binding` loads just that extension
module from ``/usr/lib/python3/dist-packages``. It is imported lazily: only
a sandbox with a seccomp profile pays for it.

:func:`build_filter` turns a profile in the OCI/Docker JSON format
(``defaultAction``, ``defaultErrnoRet``, ``architectures`` or ``archMap``,
``syscalls[{names, action, errnoRet, args, includes, excludes}]``) into a
filter object, :func:`export_bpf` its program. Raw programs (``struct
sock_filter[]`` as bytes, for the ``vb`` front end's ``--seccomp FD``) are
read with :func:`read_bpf_fd`. The process installs them all last
(vbdecl.sys.laststep).
"""

from __future__ import annotations

import errno as _errno

from vbdecl.errors import RuntimeSetupError
from vbdecl.sys import oslite as os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


DIST_PACKAGES = "/usr/lib/python3/dist-packages"
SECCOMP_SET_MODE_FILTER = 1
BPF_MAXINSNS = 4096

# Native architecture -> the compat architectures its processes can also use.
COMPAT_ARCHES: dict[str, tuple[str, ...]] = {
    "x86_64": ("X86", "X32"),
    "aarch64": ("ARM",),
    "ppc64le": (),
    "s390x": ("S390",),
}

_binding: Any = None


def binding() -> Any:
    """The ``seccomp`` module (libseccomp's Python binding)."""
    global _binding
    if _binding is not None:
        return _binding
    try:
        import seccomp

        _binding = seccomp
        return _binding
    except ImportError:
        pass
    # importlib.machinery, not importlib.util: that one costs the run path contextlib
    from importlib.machinery import EXTENSION_SUFFIXES, ExtensionFileLoader, ModuleSpec

    for suffix in EXTENSION_SUFFIXES:
        path = os.path.join(DIST_PACKAGES, "seccomp" + suffix)
        if os.path.exists(path):
            loader = ExtensionFileLoader("seccomp", path)
            try:
                module = loader.create_module(ModuleSpec("seccomp", loader, origin=path))
                loader.exec_module(module)
            except ImportError as e:
                raise RuntimeSetupError(
                    f"cannot load libseccomp's Python binding from {path}: {e}",
                    hint="reinstall it: apt-get install --reinstall python3-seccomp libseccomp2",
                ) from None
            _binding = module
            return _binding
    raise RuntimeSetupError(
        "libseccomp's Python binding (module seccomp) is not available",
        hint="install it: apt-get install python3-seccomp (or `make sysdeps`); "
             "or set security.seccomp: off",
    )


def native_arch() -> str:
    return os.uname().machine


def _action(s: Any, name: str, errno_ret: int | None, default_errno: int, where: str) -> Any:
    key = name.upper()
    if key in ("SCMP_ACT_ALLOW",):
        return s.ALLOW
    if key in ("SCMP_ACT_ERRNO",):
        return s.ERRNO(errno_ret if errno_ret is not None else default_errno)
    if key in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return s.KILL
    if key == "SCMP_ACT_KILL_PROCESS":
        return s.KILL_PROCESS
    if key == "SCMP_ACT_TRAP":
        return s.TRAP
    if key == "SCMP_ACT_TRACE":
        return s.TRACE(errno_ret or 0)
    if key == "SCMP_ACT_LOG":
        return s.LOG
    raise RuntimeSetupError(f"{where}: unsupported action {name!r}",
                            hint="use SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, SCMP_ACT_KILL, "
                                 "SCMP_ACT_KILL_PROCESS, SCMP_ACT_TRAP, SCMP_ACT_TRACE or SCMP_ACT_LOG")


_OPS = {"SCMP_CMP_NE": "NE", "SCMP_CMP_LT": "LT", "SCMP_CMP_LE": "LE", "SCMP_CMP_EQ": "EQ",
        "SCMP_CMP_GE": "GE", "SCMP_CMP_GT": "GT", "SCMP_CMP_MASKED_EQ": "MASKED_EQ"}


def _arch_token(s: Any, name: str, where: str) -> Any:
    short = name.upper().removeprefix("SCMP_ARCH_")
    token = getattr(s.Arch, short, None)
    if token is None:
        raise RuntimeSetupError(f"{where}: unknown architecture {name!r}",
                                hint="use names such as SCMP_ARCH_X86_64, SCMP_ARCH_X86, SCMP_ARCH_X32")
    return token


def _native_scmp_name() -> str:
    return {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64", "i686": "SCMP_ARCH_X86",
            "armv7l": "SCMP_ARCH_ARM", "ppc64le": "SCMP_ARCH_PPC64LE", "s390x": "SCMP_ARCH_S390X",
            "riscv64": "SCMP_ARCH_RISCV64"}.get(native_arch(), "SCMP_ARCH_NATIVE")


def known_syscall(name: str) -> bool:
    """True when libseccomp knows ``name`` on some architecture."""
    s = binding()
    return bool(s.resolve_syscall(s.Arch.NATIVE, name) != -1)


_ARCH_ALIASES = {"x86_64": {"x86_64", "amd64"}, "aarch64": {"aarch64", "arm64"}}


def _kernel_at_least(version: str) -> bool:
    def parts(v: str) -> tuple[int, ...]:
        out = []
        for p in v.split("-")[0].split(".")[:3]:
            digits = "".join(ch for ch in p if ch.isdigit())
            out.append(int(digits or 0))
        return tuple(out)

    return parts(os.uname().release) >= parts(version)


def rule_applies(rule: dict[str, Any], caps: set[str], arch: str) -> bool:
    """Docker's semantics: every ``includes`` condition holds and no ``excludes`` one does."""
    aliases = _ARCH_ALIASES.get(arch, {arch})
    inc = rule.get("includes") or {}
    exc = rule.get("excludes") or {}
    if any(c.upper().removeprefix("CAP_") not in caps for c in inc.get("caps") or []):
        return False
    if inc.get("arches") and not aliases & {a.lower() for a in inc["arches"]}:
        return False
    if inc.get("minKernel") and not _kernel_at_least(str(inc["minKernel"])):
        return False
    if any(c.upper().removeprefix("CAP_") in caps for c in exc.get("caps") or []):
        return False
    return not aliases & {a.lower() for a in exc.get("arches") or []}


def build_filter(profile: dict[str, Any], *, caps: set[str] | None = None,
                 strict_names: bool = False, where: str = "seccomp profile") -> Any:
    """A libseccomp filter for an OCI/Docker-format profile (not loaded yet).

    ``caps``: the capabilities the payload keeps, for ``includes``/``excludes``
    conditions. ``strict_names``: an unknown syscall name is an error (manifest
    lists) instead of being skipped (profile files name calls newer than
    libseccomp). The filter does not set no_new_privs itself: the caller does.
    """
    s = binding()
    caps = caps or set()
    default_errno = int(profile.get("defaultErrnoRet") or _errno.EPERM)
    default_name = str(profile.get("defaultAction", "SCMP_ACT_ALLOW"))
    default = _action(s, default_name, default_errno, default_errno, f"{where}: defaultAction")
    try:
        filt = s.SyscallFilter(default)
        filt.set_attr(s.Attr.CTL_NNP, 0)
    except (RuntimeError, OSError) as e:
        raise RuntimeSetupError(f"{where}: libseccomp cannot create the filter: {e}") from None

    arch_names: list[str] = []
    native = _native_scmp_name()
    for entry in profile.get("archMap") or []:
        if str(entry.get("architecture", "")).upper() == native:
            arch_names += list(entry.get("subArchitectures") or [])
    if not profile.get("archMap"):
        arch_names += [a for a in profile.get("architectures") or [] if a.upper() != native]
    for a in arch_names:
        token = _arch_token(s, a, where)
        if not filt.exist_arch(token):
            try:
                filt.add_arch(token)
            except (RuntimeError, OSError) as e:
                raise RuntimeSetupError(f"{where}: cannot add architecture {a}: {e}") from None

    arch = native_arch()
    # Entries are applied in order; a name that already has an argument-less rule
    # keeps its first one (libseccomp refuses conflicting duplicates).
    plain_done: set[str] = set()
    for i, rule in enumerate(profile.get("syscalls") or []):
        if not rule_applies(rule, caps, arch):
            continue
        names = list(rule.get("names") or ([rule["name"]] if rule.get("name") else []))
        act_name = str(rule.get("action", ""))
        errno_ret = rule.get("errnoRet")
        action = _action(s, act_name, errno_ret, default_errno, f"{where}: syscalls[{i}]")
        if act_name.upper() == default_name.upper() and (
                act_name.upper() != "SCMP_ACT_ERRNO"
                or (errno_ret if errno_ret is not None else default_errno) == default_errno):
            continue  # same as the default action: nothing to add
        args = []
        for a in rule.get("args") or []:
            op = _OPS.get(str(a.get("op", "")).upper())
            if op is None:
                raise RuntimeSetupError(f"{where}: syscalls[{i}]: unknown comparison {a.get('op')!r}")
            value, value_two = int(a.get("value", 0)), int(a.get("valueTwo", 0))
            if op == "MASKED_EQ":
                args.append(s.Arg(int(a["index"]), s.MASKED_EQ, value, value_two))
            else:
                args.append(s.Arg(int(a["index"]), getattr(s, op), value))
        for name in names:
            if s.resolve_syscall(s.Arch.NATIVE, name) == -1:
                if strict_names:
                    raise RuntimeSetupError(
                        f"{where}: unknown system call {name!r}",
                        hint="check the spelling; `@group` names are expanded first")
                continue
            if not args:
                if name in plain_done:
                    continue
                plain_done.add(name)
            try:
                filt.add_rule(action, name, *args)
            except (RuntimeError, OSError) as e:
                raise RuntimeSetupError(f"{where}: syscalls[{i}]: cannot add a rule for {name}: {e}",
                                        hint="two rules for one call must not conflict") from None
    return filt


def export_bpf(filt: Any) -> bytes:
    """The classic-BPF program of a filter, as bytes (``struct sock_filter[]``)."""
    with open(os.memfd_create("vbdecl-seccomp", os.MFD_CLOEXEC), "w+b") as f:
        filt.export_bpf(f)
        f.seek(0)
        return f.read()


def library_identity() -> list[list[object]]:
    """``[path, inode, size, mtime_ns]`` of the binding module and of any libseccomp
    it loaded (Debian's binding links it statically): a program built by one
    libseccomp is not reused with another."""
    files = [str(getattr(binding(), "__file__", "") or "")]
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                fields = line.split(None, 5)
                if len(fields) == 6 and os.path.basename(fields[5].strip()).startswith("libseccomp."):
                    files.append(fields[5].strip())
    except OSError:
        pass
    identity: list[list[object]] = []
    for path in dict.fromkeys(p for p in files if p):
        st = os.stat(path)
        identity.append([path, st.st_ino, st.st_size, st.st_mtime_ns])
    return identity


def library_unchanged(identity: object) -> bool:
    """The files recorded by :func:`library_identity` are still there, unchanged."""
    if not isinstance(identity, list) or not identity:
        return False
    for item in identity:
        if not isinstance(item, list) or len(item) != 4:
            return False
        try:
            st = os.stat(str(item[0]))
        except OSError:
            return False
        if [st.st_ino, st.st_size, st.st_mtime_ns] != item[1:]:
            return False
    return True


def read_bpf_fd(fd: int) -> bytes:
    """Read a raw program from ``fd`` to EOF, close it, and check its shape."""
    chunks = []
    total = 0
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            total += len(chunk)
            if total > BPF_MAXINSNS * 8:
                raise RuntimeSetupError(f"seccomp program on fd {fd} is longer than {BPF_MAXINSNS} instructions")
            chunks.append(chunk)
    except OSError as e:
        raise RuntimeSetupError(f"cannot read the seccomp program on fd {fd}: {os.strerror(e.errno or 0)}",
                                hint="pass an open, readable fd") from None
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    prog = b"".join(chunks)
    if not prog or len(prog) % 8:
        raise RuntimeSetupError(
            f"the seccomp program on fd {fd} is {len(prog)} bytes, not a non-empty multiple of 8",
            hint="pass a compiled classic-BPF program (struct sock_filter[])")
    return prog


def errno_number(value: str | int) -> int:
    """``"EPERM"`` or ``1`` -> 1."""
    if isinstance(value, int):
        return value
    code = getattr(_errno, str(value).upper(), None)
    if not isinstance(code, int):
        raise RuntimeSetupError(f"unknown errno {value!r}", hint="use a name such as EPERM or ENOSYS")
    return code

"""The manifest model (MANIFEST.md, version 1): pydantic v2, strict, frozen, no unknown keys.

Values are checked and converted here (sizes to bytes, modes to ints,
capability names to upper case without ``CAP_``, port strings to port
objects); defaults that depend on other keys (bridge defaults, the net
namespace in host mode, ...) are filled in by :mod:`vbdecl.model.normalize`.

Errors raised by validators are ``PydanticCustomError`` with a ``hint`` in
their context; :mod:`vbdecl.model.load` turns them into located problems.
"""

from __future__ import annotations

import difflib
import errno as _errno
import ipaddress
import itertools
import posixpath
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from vbdecl.model import names, units

API_VERSION = "vbdecl/v1"
KIND = "Environment"


def fail(message: str, hint: str | None = None, *, at: tuple[str | int, ...] = ()) -> PydanticCustomError:
    """A validation error with our message and hint (raise it).

    ``at`` is the path, relative to the value being validated, of the key the
    error is about (a model validator points at one of its fields this way).
    """
    return PydanticCustomError("vbdecl", "{message}", {"message": message, "hint": hint, "at": at})


def fail_all(errors: list[PydanticCustomError]) -> PydanticCustomError:
    """One error carrying several of :func:`fail`'s (raise it when ``errors`` is not
    empty): a model validator reports every rule it finds broken, not the first
    only. The loader turns each into its own problem (``more`` in the context)."""
    first, rest = errors[0], errors[1:]
    ctx = dict(first.context or {})
    if rest:
        ctx["more"] = [dict(e.context or {}) for e in rest]
    return PydanticCustomError("vbdecl", "{message}", ctx)


def did_you_mean(word: str, choices: list[str] | tuple[str, ...] | frozenset[str]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, hide_input_in_errors=True)


# --- scalar types -------------------------------------------------------------------------


def _check_target(value: Any) -> Any:
    if not isinstance(value, str):
        return value  # the str type check reports it
    if not value.startswith("/"):
        raise fail(f"target {value!r} is not absolute",
                   f"a target is a path inside the environment: write /{value.lstrip('./')}")
    if "\0" in value:
        raise fail("target contains a NUL byte")
    if ".." in value.split("/"):
        raise fail(f"target {value!r} contains '..'",
                   "targets must not climb: write the path without '..' components")
    _check_path_length(value, "target")
    return posixpath.normpath(value).replace("//", "/")


# Linux's PATH_MAX (with its NUL) and NAME_MAX, in bytes
PATH_MAX, NAME_MAX = 4096, 255


def _check_path_length(value: str, what: str) -> None:
    """A path the kernel takes: one it refuses (ENAMETOOLONG) is said at the manifest's
    key, not at run time (a review's 5,000-byte target validated, then failed)."""
    data = value.encode("utf-8", "surrogateescape")
    if len(data) >= PATH_MAX:
        raise fail(f"{what} is {len(data)} bytes long: Linux takes paths of up to {PATH_MAX - 1}")
    longest = max(data.split(b"/"), key=len)
    if len(longest) > NAME_MAX:
        raise fail(f"{what} has a name of {len(longest)} bytes ({longest[:24].decode('utf-8', 'replace')}...): "
                   f"Linux takes names of up to {NAME_MAX}")


def _check_host_path(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if not value:
        raise fail("a host path cannot be empty")
    if "\0" in value:
        raise fail("host path contains a NUL byte")
    if value.startswith("~"):
        raise fail(f"host path {value!r} starts with '~', which vbdecl does not expand",
                   "write the absolute path, or a path relative to the manifest's directory")
    _check_path_length(value, "host path")
    return value


def _check_size(value: Any) -> Any:
    if value is None:
        return None
    try:
        return units.parse_size(value)
    except units.UnitError as err:
        raise fail(err.message, err.hint) from None


def _check_mode(value: Any) -> Any:
    try:
        mode = units.parse_mode(value)
    except units.UnitError as err:
        raise fail(err.message, err.hint) from None
    return mode


def _check_ifname(value: Any, what: str = "interface") -> Any:
    if isinstance(value, str) and (problem := names.ifname_problem(value, what)):
        raise fail(*problem)
    return value


def _check_bridge_name(value: Any) -> Any:
    return _check_ifname(value, "bridge")


def _check_capability(value: Any) -> Any:
    if not isinstance(value, str):
        raise fail(f"expected a capability name, got {type(value).__name__} {value!r}",
                   "write names such as NET_BIND_SERVICE or CAP_SYS_ADMIN")
    name = value.upper()
    if name.startswith("CAP_"):
        name = name[4:]
    if name == "ALL":
        return name
    if name not in names.CAPABILITIES:
        raise fail(f"unknown capability {value!r}",
                   did_you_mean(name, list(names.CAPABILITIES)) or
                   "see capabilities(7) for the names; ALL means every capability")
    return name


def _check_syscall(value: Any) -> Any:
    if not isinstance(value, str):
        raise fail(f"expected a syscall name, got {type(value).__name__} {value!r}")
    if value.startswith("@"):
        if value not in names.SYSCALL_GROUPS:
            raise fail(f"unknown syscall group {value!r}",
                       did_you_mean(value, list(names.SYSCALL_GROUPS))
                       or "groups: " + ", ".join(sorted(names.SYSCALL_GROUPS)))
        return value
    if value not in names.SYSCALLS:
        raise fail(f"unknown syscall {value!r}",
                   did_you_mean(value, names.SYSCALLS) or "see syscalls(2) for the names")
    return value


def _check_errno(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        if value in _errno.errorcode:
            return _errno.errorcode[value]
        raise fail(f"unknown errno {value}", "use a name such as EPERM or ENOSYS")
    if isinstance(value, str) and value.upper() in names.ERRNOS:
        return value.upper()
    raise fail(f"unknown errno {value!r}",
               did_you_mean(str(value).upper(), names.ERRNOS) or "use a name such as EPERM or ENOSYS")


def _check_ipv4(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise fail(f"invalid IPv4 address {value!r}", "write it like 10.88.0.2") from None


def _check_ipv6(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return str(ipaddress.IPv6Address(value))
    except ValueError:
        raise fail(f"invalid IPv6 address {value!r}", "write it like fd00:88::2") from None


def _check_ip(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise fail(f"invalid IP address {value!r}", "write it like 192.0.2.53 or 2001:db8::53") from None


def _check_cidr(version: int) -> Any:
    def check(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        example = "10.88.0.0/24" if version == 4 else "fd00:88::/64"
        try:
            net = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise fail(f"invalid IPv{version} subnet {value!r}", f"write it in CIDR form, e.g. {example}") from None
        if net.version != version:
            raise fail(f"{value!r} is an IPv{net.version} subnet, not IPv{version}",
                       "use subnet for IPv4 and subnet6 for IPv6")
        if "/" not in value:
            raise fail(f"subnet {value!r} has no prefix length", f"write it in CIDR form, e.g. {example}")
        if net.network_address != ipaddress.ip_interface(value).ip:
            raise fail(f"subnet {value!r} has host bits set",
                       f"the network address is {net.with_prefixlen}")
        if net.num_addresses < 4:
            raise fail(f"subnet {value!r} is too small for a gateway and an address",
                       "use a prefix of /30 or shorter (IPv6: /126 or shorter)")
        return net.with_prefixlen
    return check


_HOSTNAME_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")


def _check_hostname(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if len(value) > 64 or not _HOSTNAME_RE.fullmatch(value):
        raise fail(f"invalid hostname {value!r}",
                   "use letters, digits and '-', dot-separated labels, at most 64 characters")
    return value


_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def valid_name(value: str) -> bool:
    """Whether ``value`` may be an environment's metadata.name."""
    return _NAME_RE.fullmatch(value) is not None


def _check_name(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if not _NAME_RE.fullmatch(value):
        import unicodedata

        # (accents dropped, not each made a '-': a review's 'rva-ünï' was told 'rva--n')
        plain = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode().lower()
        suggestion = re.sub(r"[^a-z0-9]+", "-", plain).strip("-")[:63].rstrip("-")
        raise fail(f"invalid name {value!r}: lower-case letters, digits and '-', 1-63 characters, "
                   "starting and ending with a letter or digit",
                   f"e.g. {suggestion!r}" if suggestion and _NAME_RE.fullmatch(suggestion) else None)
    return value


def _check_env_name(value: Any) -> Any:
    if isinstance(value, str) and (not value or "=" in value or "\0" in value):
        raise fail(f"invalid environment variable name {value!r}", "a name cannot be empty or contain '=' or NUL")
    return value


def _no_nul(value: Any) -> Any:
    if isinstance(value, str) and "\0" in value:
        raise fail("the string contains a NUL byte")
    return value


Target = Annotated[str, AfterValidator(_check_target),
                   WithJsonSchema({"type": "string", "pattern": r"^/(?!(.*/)?\.\.(/|$))[^\x00]*$",
                                   "description": "absolute path inside the environment, no '..'"})]
HostPath = Annotated[str, AfterValidator(_check_host_path),
                     WithJsonSchema({"type": "string", "minLength": 1, "description": "host path; relative paths are relative to the manifest's directory"})]
Size = Annotated[int, BeforeValidator(_check_size),
                 WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 0},
                                           # the units of vbdecl.model.units._SIZE_UNITS
                                           {"type": "string",
                                            "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*(b|B|kB?|[MGT]B?|[KMGT]iB?)?\s*$"}],
                                 "description": "bytes, or with a unit: Ki Mi Gi Ti (1024) / k M G T (1000)"})]
Mode = Annotated[int, BeforeValidator(_check_mode),
                 WithJsonSchema({"type": "string", "pattern": "^(0o)?[0-7]{1,4}$", "description": "octal digits, quoted: \"0755\""})]
BridgeName = Annotated[str, AfterValidator(_check_bridge_name),
                       WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 15, "pattern": "^[^@]*$"})]
CapName = Annotated[str, BeforeValidator(_check_capability),
                    WithJsonSchema({"type": "string", "description": "capability name, e.g. NET_BIND_SERVICE or CAP_NET_ADMIN; ALL"})]
SyscallName = Annotated[str, BeforeValidator(_check_syscall),
                        WithJsonSchema({"type": "string", "description": "syscall name or @group"})]
Errno = Annotated[str, BeforeValidator(_check_errno),
                  WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "integer"}], "description": "errno name, e.g. EPERM"})]
IPv4 = Annotated[str, AfterValidator(_check_ipv4), WithJsonSchema({"type": "string", "format": "ipv4"})]
IPv6 = Annotated[str, AfterValidator(_check_ipv6), WithJsonSchema({"type": "string", "format": "ipv6"})]
IP = Annotated[str, AfterValidator(_check_ip), WithJsonSchema({"type": "string"})]
Cidr4 = Annotated[str, AfterValidator(_check_cidr(4)), WithJsonSchema({"type": "string", "description": "IPv4 CIDR, e.g. 10.88.0.0/24"})]
Cidr6 = Annotated[str, AfterValidator(_check_cidr(6)), WithJsonSchema({"type": "string", "description": "IPv6 CIDR, e.g. fd00:88::/64"})]
Port = Annotated[int, Field(ge=1, le=65535)]
SafeStr = Annotated[str, AfterValidator(_no_nul)]
EnvName = Annotated[str, AfterValidator(_check_env_name)]


# --- metadata -----------------------------------------------------------------------------


class Metadata(_Model):
    name: Annotated[str, AfterValidator(_check_name),
                    WithJsonSchema({"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"})]
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


# --- namespaces and id maps ---------------------------------------------------------------


class NamespaceJoin(_Model):
    join: Annotated[str, AfterValidator(_check_host_path),
                    WithJsonSchema({"type": "string", "description": "/proc/PID/ns/TYPE or a pinned namespace file"})]
    nested: bool = Field(default=False, description=(
        "pid only: a new pid namespace whose parent is the joined one (bubblewrap's "
        "--pidns FD with --unshare-pid)"))


def _ns_tag(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, dict | NamespaceJoin):
        return "{join}"
    return None


NsValue = Annotated[
    Annotated[bool, Tag("bool")] | Annotated[NamespaceJoin, Tag("{join}")],
    Discriminator(_ns_tag, custom_error_type="vbdecl",
                  custom_error_message="expected true, false or {join: /proc/PID/ns/TYPE}",
                  custom_error_context={"hint": "a namespace is on (true), off (false) or joined ({join: PATH})"}),
]


def _only_pid_nests(schema: dict[str, Any]) -> None:
    """The schema of every namespace but pid joins without ``nested``, as the validator
    has it (an audit: editors accepted what validate refuses). One model serves all of
    them, so that a ``nested`` elsewhere gets the validator's own words, not "unknown key"."""
    props = NamespaceJoin.model_json_schema()["properties"]
    join_only = {"type": "object", "additionalProperties": False, "required": ["join"],
                 "properties": {"join": props["join"],
                                "nested": {**props["nested"], "const": False}}}   # (false is no nesting)
    for key, prop in schema["properties"].items():
        if key != "pid":
            prop["oneOf"] = [{"type": "boolean"}, join_only]


class Namespaces(_Model):
    model_config = ConfigDict(json_schema_extra=_only_pid_nests)

    user: NsValue = False
    pid: NsValue = True
    mount: NsValue = True
    uts: NsValue = True
    ipc: NsValue = True
    net: NsValue = Field(default=True, description="network.mode host turns it off")
    cgroup: NsValue = False


class IdMapEntry(_Model):
    inside: Annotated[int, Field(ge=0, le=2**32 - 2)]
    outside: Annotated[int, Field(ge=0, le=2**32 - 2)]
    count: Annotated[int, Field(ge=1, le=2**32 - 1)] = 1


def _ids(start: int, end: int) -> str:
    """The ids start..end-1, as a person reads them."""
    return f"id {start}" if end - start == 1 else f"ids {start}..{end - 1}"


def _check_ranges(entries: list[IdMapEntry], what: str) -> list[IdMapEntry]:
    if len(entries) > 340:
        raise fail(f"{what} has {len(entries)} lines; the kernel allows at most 340")
    for side in ("inside", "outside"):
        spans = sorted((getattr(e, side), getattr(e, side) + e.count, i) for i, e in enumerate(entries))
        for (a0, a1, ai), (b0, b1, bi) in itertools.pairwise(spans):
            if b0 < a1:
                first, later = sorted((ai, bi))
                mine, theirs = ((b0, b1), (a0, a1)) if later == bi else ((a0, a1), (b0, b1))
                raise fail(f"{what}[{later}] ({side} {_ids(*mine)}) overlaps {what}[{first}] "
                           f"({side} {_ids(*theirs)}): {_ids(b0, min(a1, b1))} would be mapped twice",
                           f"each {side} id may be mapped once: shrink or move one of the two ranges",
                           at=(later,))
    for e in entries:
        if e.inside + e.count > 2**32 - 1 or e.outside + e.count > 2**32 - 1:
            raise fail(f"{what} range {e.inside}+{e.count} goes past the largest id")
    return entries


class IdMap(_Model):
    uid: Annotated[list[IdMapEntry], AfterValidator(lambda v: _check_ranges(v, "idmap.uid"))] = Field(default_factory=list)
    gid: Annotated[list[IdMapEntry], AfterValidator(lambda v: _check_ranges(v, "idmap.gid"))] = Field(default_factory=list)


# --- filesystem ---------------------------------------------------------------------------


class _Entry(_Model):
    target: Target


class BindEntry(_Entry):
    type: Literal["bind"]
    source: HostPath
    optional: bool = False


class RoBindEntry(_Entry):
    type: Literal["ro-bind"]
    source: HostPath
    optional: bool = False


class DevBindEntry(_Entry):
    type: Literal["dev-bind"]
    source: HostPath
    optional: bool = False


class ProcEntry(_Entry):
    type: Literal["proc"]


class DevEntry(_Entry):
    type: Literal["dev"]


class MqueueEntry(_Entry):
    type: Literal["mqueue"]


class TmpfsEntry(_Entry):
    type: Literal["tmpfs"]
    size: Size | None = None
    mode: Mode | None = None

    @model_validator(mode="after")
    def _size(self) -> TmpfsEntry:
        if self.size == 0:
            raise fail("tmpfs size 0 would mean no limit at all",
                       "give a size such as 64Mi, or leave size out for the kernel default (half of RAM)",
                       at=("size",))
        return self


class DirEntry(_Entry):
    type: Literal["dir"]
    mode: Mode | None = None


class FileEntry(_Entry):
    type: Literal["file"]
    content: str | None = None
    source: HostPath | None = None
    mode: Mode | None = None

    @model_validator(mode="after")
    def _one_source(self) -> FileEntry:
        if self.content is not None and self.source is not None:
            raise fail("a file takes content or source, not both",
                       "remove one of them: content writes the text, source copies a host file", at=("source",))
        return self


class BindDataEntry(_Entry):
    type: Literal["bind-data"]
    content: str
    readonly: bool = False
    mode: Mode | None = None


class SymlinkEntry(_Entry):
    type: Literal["symlink"]
    points_to: Annotated[str, Field(min_length=1), AfterValidator(_no_nul)]


class ChmodEntry(_Entry):
    type: Literal["chmod"]
    mode: Mode


class RemountRoEntry(_Entry):
    type: Literal["remount-ro"]


Lower = Annotated[list[HostPath], Field(min_length=1)]


class _OverlayBase(_Entry):
    # whiteouts and opaque directories in user.overlay.* xattrs (the mount option
    # userxattr), as bubblewrap 0.11 keeps them: a layer one of its overlays made reads
    # the same here; false, the kernel's default (trusted.*, as root)
    userxattr: bool = False


class OverlayEntry(_OverlayBase):
    type: Literal["overlay"]
    lower: Lower
    upper: HostPath | None = None
    work: HostPath | None = None

    @model_validator(mode="after")
    def _upper_work(self) -> OverlayEntry:
        if self.upper is None and self.work is None:
            raise fail("an overlay needs upper and work",
                       "set both (host directories on one filesystem), or use type: tmp-overlay "
                       "(changes discarded) or ro-overlay (read-only)")
        if self.upper is None or self.work is None:
            have, missing = ("upper", "work") if self.upper is not None else ("work", "upper")
            raise fail(f"overlay has {have} but no {missing}: upper and work go together",
                       f"add {missing}: an empty host directory on the same filesystem as {have}", at=(have,))
        u, w = posixpath.normpath(self.upper), posixpath.normpath(self.work)
        if u == w or w.startswith(u + "/") or u.startswith(w + "/"):
            raise fail("overlay upper and work must be separate directories, neither inside the other",
                       "use two sibling directories on one filesystem, e.g. .../upper and .../work", at=("work",))
        return self


class TmpOverlayEntry(_OverlayBase):
    type: Literal["tmp-overlay"]
    lower: Lower


class RoOverlayEntry(_OverlayBase):
    type: Literal["ro-overlay"]
    lower: Annotated[list[HostPath], Field(min_length=2)]


_FS_CLASSES: dict[str, type[_Entry]] = {
    "bind": BindEntry, "ro-bind": RoBindEntry, "dev-bind": DevBindEntry, "proc": ProcEntry,
    "dev": DevEntry, "mqueue": MqueueEntry, "tmpfs": TmpfsEntry, "dir": DirEntry, "file": FileEntry,
    "bind-data": BindDataEntry, "symlink": SymlinkEntry, "chmod": ChmodEntry,
    "remount-ro": RemountRoEntry, "overlay": OverlayEntry, "tmp-overlay": TmpOverlayEntry,
    "ro-overlay": RoOverlayEntry,
}


def _fs_precheck(value: Any) -> Any:
    if isinstance(value, dict):
        t = value.get("type")
        if t is None:
            raise fail("filesystem entry has no type",
                       "add type: one of " + ", ".join(names.FS_TYPES))
        if not (isinstance(t, str) and t in _FS_CLASSES):
            raise fail(f"unknown filesystem entry type {t!r}",
                       ((did_you_mean(str(t), names.FS_TYPES) or "") + " types: " + ", ".join(names.FS_TYPES)).strip())
    return value


def _fs_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        t = value.get("type")
        return t if isinstance(t, str) and t in _FS_CLASSES else None
    if isinstance(value, _Entry):
        return str(getattr(value, "type", ""))
    return None


_FsUnion = Annotated[
    Annotated[BindEntry, Tag("bind")] | Annotated[RoBindEntry, Tag("ro-bind")]
    | Annotated[DevBindEntry, Tag("dev-bind")] | Annotated[ProcEntry, Tag("proc")]
    | Annotated[DevEntry, Tag("dev")] | Annotated[MqueueEntry, Tag("mqueue")]
    | Annotated[TmpfsEntry, Tag("tmpfs")] | Annotated[DirEntry, Tag("dir")]
    | Annotated[FileEntry, Tag("file")] | Annotated[BindDataEntry, Tag("bind-data")]
    | Annotated[SymlinkEntry, Tag("symlink")] | Annotated[ChmodEntry, Tag("chmod")]
    | Annotated[RemountRoEntry, Tag("remount-ro")] | Annotated[OverlayEntry, Tag("overlay")]
    | Annotated[TmpOverlayEntry, Tag("tmp-overlay")] | Annotated[RoOverlayEntry, Tag("ro-overlay")],
    Discriminator(_fs_tag, custom_error_type="vbdecl",
                  custom_error_message="expected a filesystem entry mapping, e.g. {type: tmpfs, target: /tmp}",
                  custom_error_context={"hint": "each filesystem item is a mapping with type and target"}),
]
FsEntry = Annotated[_FsUnion, BeforeValidator(_fs_precheck)]


# --- limits -------------------------------------------------------------------------------


def _check_rlimit(value: Any) -> Any:
    def one(v: Any, at: tuple[int, ...] = ()) -> int:
        if isinstance(v, str) and v.lower() in ("unlimited", "infinity"):
            return names.RLIM_INFINITY
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= names.RLIM_MAX:
            return v
        if isinstance(v, int) and not isinstance(v, bool) and v > names.RLIM_MAX:
            raise fail(f"rlimit value {v} is too large: the largest limit is {names.RLIM_MAX}",
                       "write unlimited for no limit", at=at)
        raise fail(f"invalid rlimit value {v!r}",
                   "use a number >= 0, [soft, hard], or unlimited", at=at)
    if isinstance(value, list):
        if len(value) != 2:
            raise fail(f"an rlimit pair has {len(value)} items", "write [soft, hard]")
        soft, hard = one(value[0], (0,)), one(value[1], (1,))
        if hard != names.RLIM_INFINITY and (soft == names.RLIM_INFINITY or soft > hard):
            raise fail(f"rlimit soft value {value[0]} is above the hard value {value[1]}",
                       "the soft limit must be <= the hard limit")
        return [soft, hard]
    n = one(value)
    return [n, n]


_RLIMIT_VALUE = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": names.RLIM_MAX},
                           # unlimited or infinity, in any case (JSON Schema's regexes have no flags)
                           {"type": "string", "pattern": "^([uU][nN][lL][iI][mM][iI][tT][eE][dD]|"
                                                         "[iI][nN][fF][iI][nN][iI][tT][yY])$"}]}
Rlimit = Annotated[list[int], BeforeValidator(_check_rlimit),
                   WithJsonSchema({"anyOf": [*_RLIMIT_VALUE["anyOf"],
                                             {"type": "array", "minItems": 2, "maxItems": 2,
                                              "items": _RLIMIT_VALUE}]})]
RlimitName = Literal["as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice",
                     "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack"]


def _nonzero_size(value: int | None) -> int | None:
    if value == 0:
        raise fail("limits.memory 0 leaves no memory at all", "give a size such as 512Mi, or leave it out")
    return value


class Limits(_Model):
    memory: Annotated[Size | None, AfterValidator(_nonzero_size)] = None
    memory_swap: Size | None = Field(default=None, description="swap on top of memory, not memory + swap; "
                                     "0: no swap (docs/manifest.md)")
    # (at least 0.01: the kernel's smallest quota, 1 ms in each 100 ms period)
    cpu: Annotated[float, Field(ge=0.01, le=4096)] | None = Field(default=None, description="cores")
    cpu_weight: Annotated[int, Field(ge=1, le=10000)] | None = None
    pids: Annotated[int, Field(ge=1, le=names.PID_MAX_LIMIT)] | None = None
    io_weight: Annotated[int, Field(ge=1, le=10000)] | None = None
    rlimits: dict[RlimitName, Rlimit] = Field(default_factory=dict)
    optional: bool = False


# --- network ------------------------------------------------------------------------------


def _port_before(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return units.parse_port(value)
        except units.UnitError as err:
            raise fail(err.message, err.hint) from None
    if isinstance(value, int) and not isinstance(value, bool):
        raise fail(f"port {value} is a number", f'write "{value}:{value}" (host:container) or a mapping')
    return value


class PortSpec(_Model):
    host: Port
    container: Port
    protocol: Literal["tcp", "udp"] = "tcp"
    host_ip: IP | None = None


PortEntry = Annotated[PortSpec, BeforeValidator(_port_before),
                      WithJsonSchema({"anyOf": [{"type": "string", "description": "host:container[/proto]"},
                                                {"type": "object", "additionalProperties": False,
                                                 "required": ["host", "container"],
                                                 "properties": {
                                                     "host": {"type": "integer", "minimum": 1, "maximum": 65535},
                                                     "container": {"type": "integer", "minimum": 1, "maximum": 65535},
                                                     "protocol": {"enum": ["tcp", "udp"], "default": "tcp"},
                                                     "host_ip": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}]})]


def _auto_or(check: Any) -> Any:
    def inner(value: Any) -> Any:
        if value == "auto":
            return value
        return check(value)
    return inner


class Network(_Model):
    mode: Literal["host", "isolated", "bridge"] = "isolated"
    bridge: BridgeName | None = Field(default=None, description="default vbdecl0 in bridge mode")
    subnet: Cidr4 | None = Field(default=None, description="default 10.88.0.0/24 in bridge mode")
    subnet6: Cidr6 | None = None
    address: Annotated[str, AfterValidator(_auto_or(_check_ipv4))] = "auto"
    address6: Annotated[str, AfterValidator(_auto_or(_check_ipv6))] | None = None
    nat: bool = True
    egress: Annotated[str, AfterValidator(_auto_or(_check_ifname))] = "auto"
    ports: list[PortEntry] = Field(default_factory=list)
    dns: list[IP] | None = None
    hosts: dict[Annotated[str, AfterValidator(_check_hostname)], IP] = Field(default_factory=dict)
    mtu: Annotated[int, Field(ge=68, le=65535)] | None = None

    @model_validator(mode="after")
    def _rules(self) -> Network:
        # every broken rule at once (a review fixed an address, then found a port
        # published three times, in rounds)
        errors: list[PydanticCustomError] = []
        if self.mode != "bridge":
            for key in ("bridge", "subnet", "subnet6", "address", "address6", "nat", "egress", "ports"):
                if key in self.model_fields_set:
                    errors.append(fail(f"network.{key} needs network.mode: bridge (the mode is {self.mode})",
                                       "set mode: bridge, or remove " + key, at=(key,)))
            if errors:
                raise fail_all(errors)
            return self
        subnet = ipaddress.IPv4Network(self.subnet or "10.88.0.0/24")
        if self.address != "auto":
            addr = ipaddress.IPv4Address(self.address)
            if addr not in subnet:
                errors.append(fail(f"address {self.address} is outside the subnet {subnet}",
                                   f"choose an address in {subnet}, or address: auto", at=("address",)))
            elif addr in (subnet.network_address, subnet.broadcast_address, subnet.network_address + 1):
                errors.append(fail(f"address {self.address} is the network, broadcast or gateway address of "
                                   f"{subnet}", f"the gateway is {subnet.network_address + 1}; pick another "
                                   "host address", at=("address",)))
        if self.address6 not in (None, "auto"):
            if self.subnet6 is None:
                errors.append(fail("address6 needs subnet6", "add subnet6, e.g. fd00:88::/64", at=("address6",)))
            else:
                net6 = ipaddress.IPv6Network(self.subnet6)
                addr6 = ipaddress.IPv6Address(self.address6)
                if addr6 not in net6:
                    errors.append(fail(f"address6 {self.address6} is outside subnet6 {net6}",
                                       f"choose an address in {net6}, or address6: auto", at=("address6",)))
                elif addr6 in (net6.network_address, net6.network_address + 1):
                    errors.append(fail(f"address6 {self.address6} is the network or gateway address of {net6}",
                                       "pick another host address", at=("address6",)))
        # A host port is published once per protocol: the host's nftables map is keyed
        # by protocol and port (on one host_ip, or on every address without one).
        items: dict[tuple[int, str], list[int]] = {}
        for i, p in enumerate(self.ports):
            items.setdefault((p.host, p.protocol), []).append(i)
        for (host, proto), where in items.items():
            if len(where) < 2:
                continue
            # (indexes counted from 0, as in the paths of every other message)
            numbers = [f"[{i}]" for i in where]
            listed = "network.ports" + ", ".join(numbers[:-1]) + " and " + numbers[-1]
            times = "twice" if len(where) == 2 else f"{len(where)} times"
            for i in where[1:]:
                errors.append(fail(f"port {host}/{proto} is published {times} ({listed})",
                                   "each host port may be published once per protocol: on one "
                                   "host_ip, or on every address of the host without host_ip",
                                   at=("ports", i)))
        if errors:
            raise fail_all(errors)
        return self


# --- process ------------------------------------------------------------------------------


def _command_before(value: Any) -> Any:
    if isinstance(value, str):
        raise fail("command is a string; it must be a list of arguments",
                   f'write command: ["/bin/sh", "-c", {value!r}] or split it into words')
    if isinstance(value, list) and value and value[0] == "":
        raise fail("the program (the command's first item) is empty", "write the program's path or name first",
                   at=(0,))
    return value


def _check_cwd(value: Any) -> Any:
    if isinstance(value, str) and not value.startswith("/"):
        raise fail(f"cwd {value!r} is not absolute", "cwd is a path inside the environment, e.g. /work")
    return value


def _tty_before(value: Any) -> Any:
    if isinstance(value, bool) or value == "auto":
        return value
    raise fail(f"invalid tty {value!r}", "use auto, true or false")


# An fd is a C int: the kernel never hands out one above INT_MAX (fs.nr_open is capped
# there), and the process's last step (_laststep.c) keeps fds as ints.
FD_MAX = 2**31 - 1


class Process(_Model):
    command: Annotated[list[SafeStr], Field(min_length=1), BeforeValidator(_command_before)] | None = None
    cwd: Annotated[str, AfterValidator(_check_cwd)] = "/"
    env: dict[EnvName, SafeStr] = Field(default_factory=dict)
    clear_env: bool = False
    unset_env: list[EnvName] = Field(default_factory=list)
    argv0: Annotated[SafeStr, Field(min_length=1)] | None = None
    user: Annotated[int, Field(ge=0, le=2**32 - 2)] = 0
    group: Annotated[int, Field(ge=0, le=2**32 - 2)] = Field(
        default=0, description="gid inside; 0 when left out, whatever user is (no passwd lookup)")
    init: bool = True
    die_with_parent: bool = True
    new_session: bool = False
    inherit_fds: list[Annotated[int, Field(ge=3, le=FD_MAX)]] = Field(default_factory=list)
    tty: Annotated[bool | Literal["auto"], BeforeValidator(_tty_before)] = "auto"


# --- security -----------------------------------------------------------------------------


class Capabilities(_Model):
    drop: list[CapName] = Field(default_factory=list)
    add: list[CapName] = Field(default_factory=list)

    @model_validator(mode="after")
    def _no_all_in_add(self) -> Capabilities:
        if "ALL" in self.add:
            raise fail("capabilities.add cannot be ALL",
                       "list the capabilities to keep; every one you do not add is dropped by drop: [ALL]",
                       at=("add", self.add.index("ALL")))
        return self


class SeccompProfile(_Model):
    profile: HostPath


class SeccompAllow(_Model):
    allow: Annotated[list[SyscallName], Field(min_length=1)]


class SeccompDeny(_Model):
    deny: Annotated[list[SyscallName], Field(min_length=1)]
    errno: Errno = "EPERM"


_SECCOMP_ONE_OF = (
    "keep one: {allow: [...]} lets only the listed calls through (every other fails with "
    "EPERM), {deny: [...]} refuses the listed calls on top of the default profile, "
    "{profile: FILE} is a whole profile; with an allow list, a call to refuse is one left out")


def _seccomp_precheck(value: Any) -> Any:
    if isinstance(value, str) and value not in ("off", "default"):
        raise fail(f"unknown seccomp mode {value!r}",
                   ((did_you_mean(value, ["off", "default"]) or "")
                    + " seccomp is off, default, {profile: FILE}, {allow: [...]} or {deny: [...], errno: EPERM}").strip())
    if isinstance(value, bool):
        raise fail(f"seccomp: {str(value).lower()} is not a mode", "use default or off")
    if isinstance(value, dict) and not any(k in value for k in ("profile", "allow", "deny")):
        raise fail("a seccomp mapping needs profile, allow or deny",
                   "write {profile: ./p.json}, {allow: [read, write]} or {deny: [ptrace], errno: EPERM}")
    if isinstance(value, dict):
        given = [k for k in value if k in ("profile", "allow", "deny")]
        if len(given) > 1:
            raise fail(f"seccomp: {given[0]} and {given[1]} cannot be combined",
                       _SECCOMP_ONE_OF, at=(given[1],))
    return value


def _seccomp_tag(value: Any) -> str | None:
    if isinstance(value, str):
        return "off|default"
    if isinstance(value, dict):
        for key, tag in (("profile", "{profile}"), ("allow", "{allow}"), ("deny", "{deny}")):
            if key in value:
                return tag
        return None
    if isinstance(value, SeccompProfile):
        return "{profile}"
    if isinstance(value, SeccompAllow):
        return "{allow}"
    if isinstance(value, SeccompDeny):
        return "{deny}"
    return None


_SeccompUnion = Annotated[
    Annotated[Literal["off", "default"], Tag("off|default")] | Annotated[SeccompProfile, Tag("{profile}")]
    | Annotated[SeccompAllow, Tag("{allow}")] | Annotated[SeccompDeny, Tag("{deny}")],
    Discriminator(_seccomp_tag, custom_error_type="vbdecl",
                  custom_error_message="expected off, default, {profile: FILE}, {allow: [...]} or {deny: [...]}",
                  custom_error_context={"hint": None}),
]
Seccomp = Annotated[_SeccompUnion, BeforeValidator(_seccomp_precheck)]


class LandlockPorts(_Model):
    bind: list[Port] = Field(default_factory=list)
    connect: list[Port] = Field(default_factory=list)


def _check_landlock_path(value: Any, info: ValidationInfo) -> Any:
    """A Landlock rule's path: absolute, inside the environment (a target's rules, in
    the words of the key it is under)."""
    key = f"security.landlock.{info.field_name}"
    if isinstance(value, str) and not value.startswith("/"):
        raise fail(f"{key}: path {value!r} is not absolute",
                   f"a Landlock path is a path inside the environment: write /{value.lstrip('./')}")
    if isinstance(value, str) and ".." in value.split("/"):
        raise fail(f"{key}: path {value!r} contains '..'",
                   "write the path without '..' components")
    return value


LandlockPath = Annotated[Target, BeforeValidator(_check_landlock_path)]


class Landlock(_Model):
    read: list[LandlockPath] = Field(default_factory=list)
    write: list[LandlockPath] = Field(default_factory=list)
    read_write: list[LandlockPath] = Field(default_factory=list)
    execute: list[LandlockPath] = Field(default_factory=list)
    ports: LandlockPorts | None = None
    optional: bool = False


class Security(_Model):
    no_new_privs: bool = True
    capabilities: Capabilities | None = None
    seccomp: Seccomp = "default"
    landlock: Landlock | None = None
    disable_userns: bool = False


class Status(_Model):
    lock_file: HostPath | None = None
    events: HostPath | None = None


# --- the environment ----------------------------------------------------------------------


class Spec(_Model):
    rootfs: HostPath | None = None
    hostname: Annotated[str, AfterValidator(_check_hostname)] | None = None
    namespaces: Namespaces = Field(default_factory=Namespaces)
    idmap: IdMap | None = None
    filesystem: list[FsEntry] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)
    network: Network = Field(default_factory=Network)
    process: Process = Field(default_factory=Process)
    security: Security = Field(default_factory=Security)
    status: Status = Field(default_factory=Status)

    @model_validator(mode="after")
    def _rules(self) -> Spec:
        ns = self.namespaces
        user_on = ns.user is True
        errors: list[PydanticCustomError] = []
        # With user: false the map is for the user namespace vbdecl implies when run
        # unprivileged (the manifest format's own example); a joined one has its maps.
        if self.idmap is not None and isinstance(ns.user, NamespaceJoin):
            errors.append(fail("idmap needs a user namespace of the environment's own, but "
                               "namespaces.user joins another (which has its maps)",
                               "remove idmap, or set namespaces: {user: true}", at=("idmap",)))
        if self.idmap is not None or user_on:
            for what, ident, ranges in (("user", self.process.user, self.idmap.uid if self.idmap else []),
                                        ("group", self.process.group, self.idmap.gid if self.idmap else [])):
                key = "uid" if what == "user" else "gid"
                add = f"{{inside: {ident}, outside: ..., count: 1}}"
                if ranges and not any(e.inside <= ident < e.inside + e.count for e in ranges):
                    errors.append(fail(f"process.{what} {ident} is not mapped by idmap.{key}",
                                       f"add a range that covers {ident} inside, e.g. {add}",
                                       at=("process", what)))
                elif not ranges and user_on and ident != 0:
                    # (the default map: the caller as 0 only; setresuid failed at run time)
                    errors.append(fail(f"process.{what} {ident} is not mapped: without idmap.{key} the "
                                       "user namespace maps only the caller, as 0",
                                       f"add idmap.{key}: [{add}], or leave process.{what} out",
                                       at=("process", what)))
        if self.security.disable_userns and not user_on:
            errors.append(fail("security.disable_userns needs namespaces.user: true",
                               "the limit is set inside the environment's own user namespace, never on the host",
                               at=("security", "disable_userns")))
        for key in ("user", "mount", "uts", "ipc", "net", "cgroup"):
            value = getattr(ns, key)
            if isinstance(value, NamespaceJoin) and value.nested:
                errors.append(fail(f"namespaces.{key}.nested: only a pid namespace can be nested in a joined one",
                                   f"remove nested, or use namespaces.{key}: true for a new {key} namespace",
                                   at=("namespaces", key, "nested")))
        for i, entry in enumerate(self.filesystem):
            # The kernel lets a user namespace mount these only for a namespace it owns.
            owner = {"proc": "pid", "mqueue": "ipc"}.get(entry.type)
            value = getattr(ns, owner) if owner is not None else None
            owned = value is True or (isinstance(value, NamespaceJoin) and value.nested)
            if owner is not None and user_on and not owned:
                errors.append(fail(
                    f"{entry.type} in a new user namespace needs namespaces.{owner}: true",
                    f"a user namespace may mount {entry.type} only in {owner} namespaces it owns "
                    f"(not the host's, not a joined one): set namespaces.{owner}: true, or remove "
                    f"this entry", at=("filesystem", i, "type")))
        has_root = ns.mount is True or self.rootfs is not None or bool(self.filesystem)
        for key in ("dns", "hosts"):
            if not has_root and getattr(self.network, key):
                errors.append(fail(
                    f"network.{key} is written into the environment's own root, which it has only "
                    "with a mount namespace of its own", f"set namespaces.mount: true (with the "
                    f"filesystem the process needs), or remove network.{key}", at=("network", key)))
        # (hostname turns uts: false on, and host mode net: true off: normalize.normalize_spec)
        if self.hostname is not None and isinstance(ns.uts, NamespaceJoin):
            errors.append(fail("hostname needs a uts namespace of the environment's own, but "
                               "namespaces.uts joins another (whose name it would change)",
                               "set namespaces.uts: true, or remove hostname", at=("hostname",)))
        mode = self.network.mode
        if mode == "bridge" and ns.net is not True:
            errors.append(fail("network.mode bridge needs a new net namespace (namespaces.net: true)",
                               "remove namespaces.net, or use network.mode: host", at=("network", "mode")))
        if mode == "host" and isinstance(ns.net, NamespaceJoin):
            errors.append(fail("network.mode host shares the host network, but namespaces.net joins another",
                               "remove namespaces.net (host mode turns it off)", at=("namespaces", "net")))
        if mode == "isolated" and ns.net is False:
            errors.append(fail("namespaces.net: false shares the host network, but network.mode is isolated",
                               "set network.mode: host to share the host network, or remove namespaces.net",
                               at=("namespaces", "net")))
        if self.network.ports and mode != "bridge":
            errors.append(fail("network.ports need network.mode: bridge", "set network.mode: bridge",
                               at=("network", "ports")))
        if errors:
            raise fail_all(errors)
        return self


class Environment(_Model):
    apiVersion: Literal["vbdecl/v1"]
    kind: Literal["Environment"]
    metadata: Metadata
    spec: Spec = Field(default_factory=Spec)

    @property
    def name(self) -> str:
        return self.metadata.name


def json_schema() -> dict[str, Any]:
    """The JSON Schema of one manifest document."""
    schema = Environment.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://vbdecl.invalid/schema/vbdecl.schema.json"
    schema["title"] = "vbdecl Environment (apiVersion vbdecl/v1)"
    return schema

"""Conversions between bubblewrap command lines and vbdecl manifests.

``document_to_manifest`` turns a normalized document (from ``vb``'s parser)
into a manifest mapping whose every key is explicit, because bubblewrap's
defaults (only a mount namespace, the host network, no seccomp, no init
without a pid namespace) are not the manifest's locked-down defaults.
``manifest_to_bwrap`` goes the other way for the subset bubblewrap can
express.
"""

from __future__ import annotations

import os
import sys
from typing import Any

_NS_FLAGS = {"user": "--unshare-user", "pid": "--unshare-pid", "uts": "--unshare-uts",
             "ipc": "--unshare-ipc", "net": "--unshare-net", "cgroup": "--unshare-cgroup"}


class NotExpressible(ValueError):
    """Manifest features bubblewrap's command line has no way to say: ``problems``,
    one line each, all that were found."""

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


def _mode(mode: int | None) -> str | None:
    return None if mode is None else f"{mode:04o}"


def _read_fd(fd: int) -> str:
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode("utf-8", errors="surrogateescape")


def _note(message: str) -> None:
    print(f"vb: note: {message}", file=sys.stderr)


def _fs_entry(entry: dict[str, Any], read_fds: bool) -> dict[str, Any]:
    kind = entry["type"]
    out: dict[str, Any] = {"type": kind}
    if kind in ("bind", "ro-bind", "dev-bind"):
        if entry.get("fd") is not None:
            _note(f"--bind-fd {entry['fd']} becomes source {entry['source']}, valid only while that fd is open")
        out["source"] = entry["source"]
        out["target"] = entry["target"]
        if entry.get("optional"):
            out["optional"] = True
    elif kind in ("file", "bind-data"):
        out["target"] = entry["target"]
        if entry.get("fd") is not None:
            if not read_fds:
                raise NotExpressible(f"{kind} from fd {entry['fd']} has no manifest equivalent")
            out["content"] = _read_fd(entry["fd"])
        elif entry.get("content") is not None:
            out["content"] = entry["content"]
        elif entry.get("source") is not None:
            out["source"] = entry["source"]
        if kind == "bind-data" and entry.get("readonly"):
            out["readonly"] = True
        if entry.get("mode") is not None:
            out["mode"] = _mode(entry["mode"])
    elif kind == "symlink":
        out["target"] = entry["target"]
        out["points_to"] = entry["points_to"]
    elif kind in ("tmpfs", "dir", "chmod"):
        out["target"] = entry["target"]
        if entry.get("size") is not None:
            out["size"] = entry["size"]
        if entry.get("mode") is not None:
            out["mode"] = _mode(entry["mode"])
    elif kind in ("overlay", "tmp-overlay", "ro-overlay"):
        out["target"] = entry["target"]
        out["lower"] = list(entry["lower"])
        if kind == "overlay":
            out["upper"] = entry["upper"]
            out["work"] = entry["work"]
        if entry.get("userxattr"):
            out["userxattr"] = True
    else:  # proc, dev, mqueue, remount-ro
        out["target"] = entry["target"]
    return out


def document_to_manifest(doc: dict[str, Any], *, read_fds: bool = False) -> dict[str, Any]:
    """A manifest mapping (MANIFEST.md keys) equivalent to a normalized document."""
    spec = doc["spec"]
    vb = spec.get("vb") or {}
    for key, flag in (("info_fd", "--info-fd"), ("json_status_fd", "--json-status-fd"),
                      ("sync_fd", "--sync-fd"), ("block_fd", "--block-fd"),
                      ("userns_block_fd", "--userns-block-fd")):
        if vb.get(key) is not None:
            _note(f"{flag} has no manifest equivalent (use status.events); left out")
    if vb.get("seccomp_fds"):
        print(f"vb: warning: {_seccomp_left_out(vb)}", file=sys.stderr)

    namespaces = {}
    for name, value in spec["namespaces"].items():
        namespaces[name] = dict(value) if isinstance(value, dict) else bool(value)
    process = spec["process"]
    out_process: dict[str, Any] = {"command": list(process["command"] or [])}
    if process.get("cwd"):
        out_process["cwd"] = process["cwd"]
    env = dict(process["env"])
    if process.get("cwd") and spec.get("vb") is not None:
        env["PWD"] = process["cwd"]     # vb (bubblewrap) sets PWD after its chdir
    if env:
        out_process["env"] = env
    if process["clear_env"]:
        out_process["clear_env"] = True
    if process["unset_env"]:
        out_process["unset_env"] = list(process["unset_env"])
    if process.get("argv0"):
        out_process["argv0"] = process["argv0"]
    if spec["idmap"] is not None:
        out_process["user"] = process["user"]
        out_process["group"] = process["group"]
    out_process["init"] = bool(process["init"])
    out_process["die_with_parent"] = bool(process["die_with_parent"])
    out_process["new_session"] = bool(process["new_session"])

    security = spec["security"]
    out_security: dict[str, Any] = {
        "no_new_privs": security["no_new_privs"],
        "capabilities": dict(security["capabilities"]) if security["capabilities"] else None,
        "seccomp": security["seccomp"],
        "disable_userns": security["disable_userns"],
    }
    if security.get("landlock"):
        ll = security["landlock"]
        out_security["landlock"] = {k: list(ll[k]) for k in ("read", "write", "read_write", "execute") if ll.get(k)}
    if out_security["capabilities"] is None:
        del out_security["capabilities"]

    net = spec["network"]
    out_net: dict[str, Any] = {"mode": net["mode"]}
    if net["mode"] == "bridge":
        out_net.update(bridge=net["bridge"], subnet=net["subnet"], nat=net["nat"])
    if (spec.get("vb") or {}).get("net_files") is False and spec["namespaces"]["mount"]:
        out_net["dns"] = []     # vb binds no resolv.conf: without dns the manifest has the host's

    manifest_spec: dict[str, Any] = {}
    if spec.get("rootfs"):
        manifest_spec["rootfs"] = spec["rootfs"]
    if spec.get("hostname"):
        manifest_spec["hostname"] = spec["hostname"]
    manifest_spec["namespaces"] = namespaces
    if spec["idmap"] is not None:
        manifest_spec["idmap"] = {k: [dict(m) for m in v] for k, v in spec["idmap"].items()}
    manifest_spec["filesystem"] = []
    for e in spec["filesystem"]:
        if _binds_host_proc(spec, e):
            manifest_spec["filesystem"].append({"type": "bind", "source": "/proc", "target": e["target"]})
            e = {**e, "host": False}    # its covers as for a proc of its own
        else:
            manifest_spec["filesystem"].append(_fs_entry(e, read_fds))
        if _covers_irq_and_bus(spec, e):
            manifest_spec["filesystem"] += [{"type": "remount-ro", "target": t} for t in _irq_and_bus(e["target"])]
    limits = {k: v for k, v in spec["limits"].items() if v not in (None, {}, False)}
    if limits:
        manifest_spec["limits"] = limits
    manifest_spec["network"] = out_net
    manifest_spec["process"] = out_process
    manifest_spec["security"] = out_security
    locks = list((spec.get("vb") or {}).get("lock_files") or [])
    if spec["status"].get("lock_file"):
        locks.insert(0, spec["status"]["lock_file"])
    if locks:
        manifest_spec["status"] = {"lock_file": locks[0]}
        _note("--lock-file becomes status.lock_file, an exclusive lock (bubblewrap's is shared)"
              + (f"; {', '.join(locks[1:])} dropped" if len(locks) > 1 else ""))
    problems = _unwritable(manifest_spec, "spec")
    if out_process.get("cwd") and not out_process["cwd"].startswith("/"):
        problems.append(f"--chdir {out_process['cwd']}: a manifest's process.cwd is absolute; give the "
                        "whole path")
    if problems:
        raise NotExpressible(problems)
    return {
        "apiVersion": "vbdecl/v1",
        "kind": "Environment",
        "metadata": {"name": doc.get("name") or "vb"},
        "spec": manifest_spec,
    }


def _unwritable(value: Any, where: str) -> list[str]:
    """Text a manifest cannot hold: YAML is Unicode, and bubblewrap's arguments are bytes
    (a review: the manifest printed for a path with a byte not UTF-8 did not load)."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _unwritable(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _unwritable(v, f"{where}[{i}]")]
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return [f"{where}: {_printable(value)} is not UTF-8 text, which is all a manifest holds"]
    return []


def _printable(text: str) -> str:
    """``text`` on one line of UTF-8: bytes that are not UTF-8 and line breaks escaped."""
    return os.fsencode(text).decode("utf-8", "backslashreplace").replace("\n", "\\n").replace("\r", "\\r")


def _binds_host_proc(spec: dict[str, Any], e: dict[str, Any]) -> bool:
    """Whether vb's (bubblewrap's) --proc entry ``e`` binds the host's /proc where a
    manifest's proc could not be mounted: in a new user namespace without a pid
    namespace of its own (which owns none). The manifest binds it too, with the
    covers vb makes (:func:`_covers_irq_and_bus`)."""
    return bool(e["type"] == "proc" and e.get("host") and spec["namespaces"]["user"] is True)


def _irq_and_bus(proc_target: str) -> list[str]:
    return [proc_target.rstrip("/") + "/" + name for name in ("irq", "bus")]


def _covers_irq_and_bus(spec: dict[str, Any], e: dict[str, Any]) -> bool:
    """Whether vb (as bubblewrap) binds /proc/irq and /proc/bus of this proc entry
    read-only: the manifest says so for a bind of the host's /proc (a manifest's
    proc covers them itself; older manifests say it too, which is harmless).
    It covers what its setup may write, and only a root caller setting up as root
    (outside a user namespace, as uid 0 of one, or with ``cover_as_root``) may."""
    if e["type"] != "proc" or e.get("host") or not {"irq", "bus"} <= set(e.get("cover") or []):
        return False
    user = spec["namespaces"]["user"]
    if user is False:
        return True     # vb runs unprivileged only in a user namespace: this is root
    if user is not True or spec["idmap"] is None:
        return False    # a joined user namespace: what its map allows is not known here
    uid = spec["idmap"]["uid"][0]
    return bool(uid["outside"] == 0 and (uid["inside"] == 0 or e.get("cover_as_root")))


def _seccomp_left_out(vb: dict[str, Any]) -> str:
    """What a manifest of --seccomp/--add-seccomp-fd programs leaves out: all of them."""
    given = " ".join(f"{vb.get('seccomp_option') or '--seccomp'} {fd}" for fd in vb["seccomp_fds"])
    return (f"{given}: this manifest runs WITHOUT that seccomp filter (security.seccomp: off): a "
            "BPF program from an fd has no manifest equivalent; give the manifest a seccomp "
            "profile (security.seccomp) before relying on it")


def vb_only(doc: dict[str, Any]) -> list[str]:
    """What ``vb`` does for this document that its manifest cannot say (so ``vbdecl run``
    of the manifest differs there), one line each; only what applies to it."""
    spec = doc["spec"]
    vb = spec.get("vb") or {}
    fs = spec.get("filesystem") or []
    out: list[str] = []
    if vb.get("seccomp_fds"):
        out.append(_seccomp_left_out(vb))
    if any(e["type"] == "proc" and e.get("host") and not _binds_host_proc(spec, e) for e in fs):
        out.append("--proc without a pid namespace: vb binds the host's /proc (bubblewrap); "
                   "the manifest mounts a new proc")
    if any(e["type"] == "dev" and e.get("shm") == "dir" for e in fs):
        out.append("--dev: vb's /dev/shm is a plain 0755 directory (bubblewrap); the manifest "
                   "mounts a tmpfs there")
    parents = sorted({e["target"] for e in fs if e.get("parent_mode", 0o755) != 0o755
                      and e["target"].count("/") > 1})
    if parents:
        out.append("parent directories vb creates for " + ", ".join(parents) + " get bubblewrap's "
                   "mode (from --perms); the manifest creates them 0755")
    dirs = [e["target"] for e in fs if e["type"] == "dir" and e.get("keep_mode")]
    if dirs:
        out.append("--dir " + ", ".join(dirs) + ": vb sets the mode only on a directory it "
                   "creates; the manifest's dir entry also sets it on one that exists")
    special = [e["target"] for e in fs if e["type"] == "dir" and (e.get("mode") or 0) & 0o6000]
    if special:     # (a conversion review)
        out.append("--dir " + ", ".join(special) + ": vb makes a new directory with mkdir, which "
                   "drops the setuid bit (bubblewrap); the manifest's dir entry sets the mode it is given")
    if spec["process"]["new_session"] and spec["namespaces"]["pid"] is True and spec["process"]["init"]:
        out.append("--new-session with --unshare-pid: vb's pid 1 starts the session and the command is "
                   "in it (bubblewrap: session 1); under the manifest the command starts its own")
    if spec["process"].get("cwd") is None:
        out.append("no --chdir: vb starts in the caller's cwd if it exists in the sandbox, else "
                   "$HOME, else /, and sets PWD; the manifest starts in / (set process.cwd)")
    out += _cap_notes(spec)
    for key, option, what in (("user_try", "--unshare-user-try", "user"),
                              ("cgroup_try", "--unshare-cgroup-try", "cgroup")):
        if not vb.get(key):
            continue
        if spec["namespaces"][what] is True:
            out.append(f"{option}: {what} namespaces are available here, so vb (as bubblewrap) creates "
                       f"one, and the manifest asks for one (namespaces.{what}: true); where they are "
                       "not available vb goes on without one, and `vbdecl run` of the manifest fails")
        else:
            out.append(f"{option}: {what} namespaces are not available here, so vb (as bubblewrap) goes "
                       f"on without one, and the manifest asks for none (namespaces.{what}: false); "
                       f"elsewhere vb creates one")
    if vb.get("userns2_fd") is not None:
        out.append("--userns2: vb switches user namespace before exec; the manifest cannot")
    if vb.get("assert_userns_disabled"):
        out.append("--assert-userns-disabled: vb checks that user namespaces are disabled; the "
                   "manifest cannot")
    return out


def _cap_notes(spec: dict[str, Any]) -> list[str]:
    """How vb's capability sets (bubblewrap's) differ from those the manifest gives:
    the manifest keeps the command's capabilities, bounds them by the same set, and
    makes them inheritable and ambient only for a uid other than 0."""
    exact = (spec.get("vb") or {}).get("capabilities")
    if exact is None:
        return []
    uid = int(spec["process"].get("user") or 0)
    bounding, kept = _cap_sets(spec["security"].get("capabilities"), uid,
                               bool(spec["security"].get("disable_userns")))
    out = []
    if set(exact["bounding"]) != bounding:
        out.append(f"vb's bounding set is bubblewrap's ({_caps_text(exact['bounding'])}); the "
                   f"manifest's is the kept capabilities ({_caps_text(bounding)})")
    carried = kept if uid != 0 else set()
    inheritable, ambient = set(exact["inheritable"]), set(exact["ambient"])
    if inheritable != carried or ambient != carried:
        ours = (f"vb makes {_caps_text(ambient)} inheritable and ambient" if inheritable == ambient
                else f"vb's inheritable capabilities are {_caps_text(inheritable)} and its ambient ones "
                     f"{_caps_text(ambient)}")
        theirs = "none (uid 0)" if uid == 0 else f"the kept ones ({_caps_text(carried)})"
        out.append(f"{ours} (bubblewrap); the manifest makes {theirs} inheritable and ambient")
    return out


def bounding_note(spec: dict[str, Any], argv: list[str]) -> str | None:
    """What ``bwrap ARGV`` (manifest_to_bwrap's) leaves in the bounding set that
    ``vbdecl run`` of ``spec`` does not: bubblewrap bounds the command by the
    capabilities it keeps only in a user namespace; without one it changes only the
    other sets, so the caller's bounding set stays. None when they are the same (or
    the manifest's is not smaller), as vb's model of bubblewrap computes them for
    this caller."""
    from vbdecl.vb.parse import VbUsageError, parse, to_document

    try:
        theirs = set(((to_document(parse(argv))["spec"].get("vb") or {}).get("capabilities") or {})
                     .get("bounding") or [])
    except VbUsageError:
        return None
    ours, _kept = _cap_sets(spec["security"].get("capabilities"), int(spec["process"].get("user") or 0),
                            bool(spec["security"].get("disable_userns")))
    if not theirs - ours:
        return None
    return (f"the bubblewrap command leaves the bounding set at {_caps_text(theirs)}, where `vbdecl run` "
            f"of this manifest keeps only {_caps_text(ours)} in it: bubblewrap narrows the bounding "
            "set only in a user namespace (namespaces.user: true); the capabilities the command "
            "holds are the same")


def proc_notes(spec: dict[str, Any]) -> list[str]:
    """What bubblewrap's --proc shows that ``vbdecl run`` of ``spec``'s proc entries
    masks (rootfs.PROC_MASKS; vb's own proc entries mask nothing)."""
    return [f"proc {e['target']}: bubblewrap's --proc shows the host's keys and timer_list there, "
            "which `vbdecl run` of this manifest shows empty"
            for e in spec["filesystem"] if e["type"] == "proc" and "cover" not in e and not e.get("host")]


def mode_notes(spec: dict[str, Any]) -> list[str]:
    """Modes the bubblewrap command leaves other than ``vbdecl run`` of ``spec`` sets:
    a dir entry's mode on a directory an earlier entry made (bubblewrap's --perms
    applies only to one --dir creates; a conversion review saw /tmp 0755 for 0700)."""
    out = []
    made: set[str] = set()      # the targets of the entries so far, and the directories above them
    for e in spec["filesystem"]:
        if e["type"] == "dir" and e.get("mode") is not None and e["target"] in made:
            out.append(f"dir {e['target']}: an earlier entry made it, and bubblewrap's --perms sets the "
                       f"mode only of a directory --dir creates: the command leaves it as made, where "
                       f"`vbdecl run` sets {e['mode']:04o} (a chmod entry says it to both)")
        path = e["target"]
        while path not in ("/", ""):
            made.add(path)
            path = os.path.dirname(path)
    return out


def _caps_text(names: Any) -> str:
    """Capability names in short: none, all, all but a few, or the list."""
    from vbdecl.model.names import CAPABILITIES

    have = set(names)
    if not have:
        return "none"
    missing = set(CAPABILITIES) - have
    if len(missing) < len(have):
        return "all" if not missing else "all but " + ", ".join(sorted(missing, key=CAPABILITIES.__getitem__))
    return ", ".join(sorted(have, key=CAPABILITIES.__getitem__))


def _cap_sets(caps: dict[str, Any] | None, uid: int, disable_userns: bool) -> tuple[set[str], set[str]]:
    """(bounding, kept) capability names of a spec, as the runtime computes them."""
    from vbdecl.model.names import CAP_LAST
    from vbdecl.ops.sec import capability_sets, mask_names

    bounding, kept = capability_sets(caps, uid, CAP_LAST, disable_userns=disable_userns)
    return mask_names(bounding), mask_names(kept)


def render(doc: dict[str, Any], *, read_fds: bool = False) -> str:
    """The manifest of ``doc`` as YAML, headed by a comment listing :func:`vb_only`."""
    text = dump_yaml(document_to_manifest(doc, read_fds=read_fds))
    notes = vb_only(doc)
    if not notes:
        return text
    head = ["# vb does more than this manifest can say; `vbdecl run` of it differs here:"]
    head += [f"#  - {_printable(note)}" for note in notes]     # (a path's newline ends a comment)
    return "\n".join(head) + "\n" + text


# What a YAML 1.1 reader (PyYAML, and jsonschema checks built on it) takes for no
# string: booleans, null, and numbers and dates in forms 1.2 dropped (`1:30` is 90
# there, `1_000` 1000, `0b1` 1). ruamel writes YAML 1.2, where they are strings, and
# leaves them bare (a review's `seccomp: off` read as false there, and failed the
# schema). The patterns are YAML 1.1's resolvers', anchored.
_YAML11_IMPLICIT = (
    r"[yYnN~]|yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF"
    r"|null|Null|NULL"
    r"|[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+"
    r"|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+"
    r"|[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
    r"|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
    r"|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}(?:(?:[Tt]|[ \t]+)[0-9]{1,2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]*)?"
    r"(?:[ \t]*(?:Z|[-+][0-9]{1,2}(?::[0-9]{2})?))?)?")


def _yaml11_not_a_string(text: str) -> bool:
    """Whether a YAML 1.1 reader takes the plain scalar ``text`` for no string."""
    import re

    return re.fullmatch(_YAML11_IMPLICIT, text) is not None


def _quoted(value: Any) -> Any:
    """``value`` with every string a YAML 1.1 reader would not read back as that string
    double-quoted (mapping keys too)."""
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    if isinstance(value, dict):
        return {_quoted(k): _quoted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_quoted(v) for v in value]
    if isinstance(value, str) and _yaml11_not_a_string(value):
        return DoubleQuotedScalarString(value)
    return value


def dump_yaml(data: dict[str, Any]) -> str:
    import io

    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 100
    buf = io.StringIO()
    yaml.dump(_quoted(data), buf)
    return buf.getvalue()


def _cap_args(caps: dict[str, Any] | None, uid: int, disable_userns: bool) -> list[str]:
    """--cap-drop/--cap-add for the capabilities the manifest keeps: vbdecl's default
    set when ``security.capabilities`` is absent (bubblewrap's default would keep
    every capability of a root caller). None when bubblewrap's default is the same:
    root keeping everything the caller holds, or another uid keeping nothing."""
    from vbdecl.model.names import CAPABILITIES
    from vbdecl.vb.parse import _caller_caps

    _bounding, names = _cap_sets(caps, uid, disable_userns)
    # bubblewrap run by root keeps what the caller holds for uid 0; run by anyone
    # else (through a user namespace) it keeps nothing without --cap-add
    if (uid == 0 and os.geteuid() == 0 and names >= _caller_caps(CAPABILITIES)) \
            or (uid != 0 and not names):
        return []
    args = ["--cap-drop", "ALL"]
    for name in sorted(names, key=CAPABILITIES.__getitem__):
        args += ["--cap-add", f"CAP_{name}"]
    return args


def manifest_to_bwrap(spec: dict[str, Any], seccomp_fd: int | None = None, *,
                      caller: tuple[int, int] | None = None) -> list[str]:
    """bubblewrap arguments for a normalized spec; NotExpressible, naming every part
    it cannot say, when there is any. ``seccomp_fd``: where bubblewrap is to read the
    program of the spec's seccomp profile (see ops.sec.bwrap_program); without it a
    profile is something bubblewrap cannot say. ``caller``: the uid and gid bubblewrap
    will run as (this process's by default), the only ones it can map."""
    args: list[str] = []
    problems: list[str] = []
    if spec.get("rootfs"):
        problems.append("spec.rootfs: bubblewrap always builds a fresh root; "
                             "bind the directory's contents instead")
    for name, flag in _NS_FLAGS.items():
        value = spec["namespaces"][name]
        if isinstance(value, dict):
            problems.append(f"namespaces.{name}.join: bubblewrap joins namespaces only by fd")
        elif value:
            args.append(flag)
    if spec["network"]["mode"] == "bridge":
        problems.append("network.mode bridge: bubblewrap has no networking beyond a new namespace")
    if spec["idmap"]:
        uid = spec["idmap"]["uid"]
        gid = spec["idmap"]["gid"]
        me = (os.getuid(), os.getgid()) if caller is None else caller
        if len(uid) != 1 or len(gid) != 1 or uid[0]["count"] != 1 or gid[0]["count"] != 1:
            problems.append("idmap ranges: bubblewrap maps exactly one uid and gid")
        elif (uid[0]["outside"], gid[0]["outside"]) != me:
            # (a review: the line mapped the caller, root, where the manifest maps 1234)
            problems.append(f"idmap outside {uid[0]['outside']}:{gid[0]['outside']}: bubblewrap maps the ids "
                            f"of the user who runs it ({me[0]}:{me[1]} here); convert as that user")
        else:
            args += ["--uid", str(uid[0]["inside"]), "--gid", str(gid[0]["inside"])]
    elif spec["process"].get("user") or spec["process"].get("group"):
        problems.append("process.user/group other than 0 without an idmap: the default map has only 0; "
                        "add an idmap that maps them" if spec["namespaces"]["user"] is True else
                        "process.user/group without a user namespace: bubblewrap runs the command "
                        "with the caller's ids; map them in a user namespace (idmap)")
    if spec.get("hostname"):
        args += ["--hostname", spec["hostname"]]
    # (bubblewrap sets up as uid 0 of a new user namespace when it mounts a devpts: parse.py)
    as_root = spec["namespaces"]["user"] is True and any(e["type"] == "dev" for e in spec["filesystem"])

    def proc_covers(target: str, host: bool) -> set[str]:
        """What bubblewrap's --proc on ``target`` covers read-only of what the manifest says."""
        as_vb = {"type": "proc", "cover": ["irq", "bus"], "host": host, "cover_as_root": as_root}
        return set(_irq_and_bus(target)) if _covers_irq_and_bus(spec, as_vb) else set()

    covered: set[str] = set()  # what bubblewrap's last --proc covers read-only already
    for e in spec["filesystem"]:
        kind = e["type"]
        if kind == "remount-ro" and e["target"] in covered:
            covered.discard(e["target"])    # document_to_manifest wrote it for vb's --proc
            continue
        covered = set()
        if kind == "bind" and e["source"] == "/proc" and not e.get("optional") and \
                spec["namespaces"]["user"] is True and spec["namespaces"]["pid"] is False:
            args += ["--proc", e["target"]]     # what bubblewrap's --proc does there
            covered = proc_covers(e["target"], host=False)
        elif kind in ("bind", "ro-bind", "dev-bind"):
            args += [f"--{kind}{'-try' if e.get('optional') else ''}", e["source"], e["target"]]
        elif kind in ("proc", "dev", "mqueue", "remount-ro"):
            args += [f"--{kind}", e["target"]]
            if kind == "proc":
                covered = proc_covers(e["target"], host=not spec["namespaces"]["pid"])
        elif kind == "tmpfs":
            if e.get("mode") is not None:
                args += ["--perms", f"{e['mode']:04o}"]
            if e.get("size") is not None:
                args += ["--size", str(e["size"])]
            args += ["--tmpfs", e["target"]]
        elif kind == "dir":
            if e.get("mode") is not None:
                args += ["--perms", f"{e['mode']:04o}"]
            args += ["--dir", e["target"]]
        elif kind == "symlink":
            args += ["--symlink", e["points_to"], e["target"]]
        elif kind == "chmod":
            args += ["--chmod", f"{e['mode']:04o}", e["target"]]
        elif kind in ("overlay", "tmp-overlay", "ro-overlay"):
            for lower in reversed(e["lower"]):  # bubblewrap lists the bottom layer first
                args += ["--overlay-src", lower]
            if kind == "overlay":
                args += ["--overlay", e["upper"], e["work"], e["target"]]
            else:
                args += [f"--{kind}", e["target"]]
        else:  # file, bind-data: bubblewrap reads them from fds only
            problems.append(f"filesystem {kind} {e['target']}: bubblewrap reads file "
                                 "contents from fds only")
    net = spec["network"]
    if net.get("dns") is None and not net.get("hosts") and (spec.get("vb") or {}).get("net_files") is not False:
        # what the manifest's run binds last (network.dns left out: the host's file)
        args += ["--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf"]
    proc = spec["process"]
    if proc.get("cwd"):
        args += ["--chdir", proc["cwd"]]
    if proc["clear_env"]:
        args.append("--clearenv")
    for key in proc["unset_env"]:
        args += ["--unsetenv", key]
    for key, value in proc["env"].items():
        args += ["--setenv", key, value]
    if proc.get("argv0"):
        args += ["--argv0", proc["argv0"]]
    if proc["new_session"]:
        args.append("--new-session")
    if proc["die_with_parent"]:
        args.append("--die-with-parent")
    if spec["namespaces"]["pid"] and not proc["init"]:
        args.append("--as-pid-1")
    sec = spec["security"]
    if sec["seccomp"] != "off" and seccomp_fd is None:
        problems.append("security.seccomp: bubblewrap takes compiled BPF programs from fds; "
                        "give --seccomp-out FILE to write this profile's program, "
                        "or set seccomp: off")
    elif sec["seccomp"] != "off":
        args += ["--seccomp", str(seccomp_fd)]
    if sec.get("landlock"):
        problems.append("security.landlock: bubblewrap has no Landlock options (vb has: "
                        "--landlock-read, --landlock-write, --landlock-rw, --landlock-exec)")
    args += _cap_args(sec.get("capabilities"), int(proc.get("user") or 0), bool(sec["disable_userns"]))
    if sec["disable_userns"]:
        args.append("--disable-userns")
    # what bubblewrap has no option for, or one that means something else (a review:
    # each of these was dropped without a word)
    if not sec["no_new_privs"]:
        problems.append("security.no_new_privs false: bubblewrap always sets no_new_privs")
    if spec["status"].get("lock_file"):
        problems.append("status.lock_file: bubblewrap's --lock-file takes a shared lock on a path inside "
                        "the sandbox; the manifest's holds a host file exclusively")
    if spec["status"].get("events"):
        problems.append("status.events: bubblewrap writes its status to an fd (--json-status-fd) only")
    if net.get("dns") or net.get("hosts"):
        problems.append("network.dns/hosts: bubblewrap writes files from fds only (--file FD DEST)")
    if net.get("mtu") is not None:
        problems.append("network.mtu: bubblewrap sets no interface's MTU")
    if proc.get("tty") is True:
        problems.append("process.tty true: bubblewrap gives the command no terminal of its own")
    limits = spec["limits"]
    if limits.get("rlimits"):
        problems.append("limits.rlimits: bubblewrap sets no rlimits (run the command under prlimit)")
    if any(limits.get(k) is not None for k in ("memory", "memory_swap", "cpu", "cpu_weight", "pids", "io_weight")):
        problems.append("limits: bubblewrap has no resource limits (use `vb --limit-*` or the manifest)")
    if problems:
        raise NotExpressible(problems)
    args.append("--")
    args += list(proc["command"] or ["/bin/sh"])
    return args

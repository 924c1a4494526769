"""``vb``: bubblewrap's command line, run through vbdecl's runtime.

Invoked as ``bwrap`` (for example through a symlink) its messages start
with ``bwrap: ``, otherwise with ``vb: ``. Its own errors exit with status 1,
as bubblewrap's do; otherwise the exit status is the sandboxed command's.
Standard library only until the sandbox runs.
"""

from __future__ import annotations

import sys

from vbdecl import __version__
from vbdecl.sys import oslite as os

BWRAP_COMPAT = "0.11.0"

USAGE_BODY = """\
    --help                       Print this help
    --version                    Print version
    --args FD                    Parse NUL-separated args from FD
    --argv0 VALUE                Set argv[0] to the value VALUE before running the program
    --level-prefix               Prepend e.g. <3> to diagnostic messages
    --unshare-all                Unshare every namespace we support by default
    --share-net                  Retain the network namespace (can only combine with --unshare-all)
    --unshare-user               Create new user namespace (may be automatically implied if not setuid)
    --unshare-user-try           Create new user namespace if possible else continue by skipping it
    --unshare-ipc                Create new ipc namespace
    --unshare-pid                Create new pid namespace
    --unshare-net                Create new network namespace
    --unshare-uts                Create new uts namespace
    --unshare-cgroup             Create new cgroup namespace
    --unshare-cgroup-try         Create new cgroup namespace if possible else continue by skipping it
    --userns FD                  Use this user namespace (cannot combine with --unshare-user)
    --userns2 FD                 After setup switch to this user namespace, only useful with --userns
    --disable-userns             Disable further use of user namespaces inside sandbox
    --assert-userns-disabled     Fail unless further use of user namespace inside sandbox is disabled
    --pidns FD                   Use this pid namespace (as parent namespace if using --unshare-pid)
    --uid UID                    Custom uid in the sandbox (requires --unshare-user or --userns)
    --gid GID                    Custom gid in the sandbox (requires --unshare-user or --userns)
    --hostname NAME              Custom hostname in the sandbox (requires --unshare-uts)
    --chdir DIR                  Change directory to DIR
    --clearenv                   Unset all environment variables
    --setenv VAR VALUE           Set an environment variable
    --unsetenv VAR               Unset an environment variable
    --lock-file DEST             Take a lock on DEST while sandbox is running
    --sync-fd FD                 Keep this fd open while sandbox is running
    --bind SRC DEST              Bind mount the host path SRC on DEST
    --bind-try SRC DEST          Equal to --bind but ignores non-existent SRC
    --dev-bind SRC DEST          Bind mount the host path SRC on DEST, allowing device access
    --dev-bind-try SRC DEST      Equal to --dev-bind but ignores non-existent SRC
    --ro-bind SRC DEST           Bind mount the host path SRC readonly on DEST
    --ro-bind-try SRC DEST       Equal to --ro-bind but ignores non-existent SRC
    --bind-fd FD DEST            Bind open directory or path fd on DEST
    --ro-bind-fd FD DEST         Bind open directory or path fd read-only on DEST
    --remount-ro DEST            Remount DEST as readonly; does not recursively remount
    --overlay-src SRC            Read files from SRC in the following overlay
    --overlay RWSRC WORKDIR DEST Mount overlayfs on DEST, with RWSRC as the host path for writes and
                                 WORKDIR an empty directory on the same filesystem as RWSRC
    --tmp-overlay DEST           Mount overlayfs on DEST, with writes going to an invisible tmpfs
    --ro-overlay DEST            Mount overlayfs read-only on DEST
    --exec-label LABEL           Exec label for the sandbox (not supported by vb)
    --file-label LABEL           File label for temporary sandbox content (not supported by vb)
    --proc DEST                  Mount new procfs on DEST
    --dev DEST                   Mount new dev on DEST
    --tmpfs DEST                 Mount new tmpfs on DEST
    --mqueue DEST                Mount new mqueue on DEST
    --dir DEST                   Create dir at DEST
    --file FD DEST               Copy from FD to destination DEST
    --bind-data FD DEST          Copy from FD to file which is bind-mounted on DEST
    --ro-bind-data FD DEST       Copy from FD to file which is readonly bind-mounted on DEST
    --symlink SRC DEST           Create symlink at DEST with target SRC
    --seccomp FD                 Load and use seccomp rules from FD (not repeatable)
    --add-seccomp-fd FD          Load and use seccomp rules from FD (repeatable)
    --block-fd FD                Block on FD until some data to read is available
    --userns-block-fd FD         Block on FD until the user namespace is ready
    --info-fd FD                 Write information about the running container to FD
    --json-status-fd FD          Write container status to FD as multiple JSON documents
    --new-session                Create a new terminal session
    --die-with-parent            Kills with SIGKILL child process (COMMAND) when vb or vb's parent dies.
    --as-pid-1                   Do not install a reaper process with PID=1
    --cap-add CAP                Add cap CAP when running as privileged user
    --cap-drop CAP               Drop cap CAP when running as privileged user
    --perms OCTAL                Set permissions of next argument (--bind-data, --file, etc.)
    --size BYTES                 Set size of next argument (only for --tmpfs)
    --chmod OCTAL PATH           Change permissions of PATH (must already exist)

vb extras (vbdecl manifest keys):
    --landlock-read PATH         Landlock: allow reading PATH (security.landlock.read)
    --landlock-write PATH        Landlock: allow writing PATH (security.landlock.write)
    --landlock-rw PATH           Landlock: allow reading and writing PATH
    --landlock-exec PATH         Landlock: allow executing from PATH
    --landlock-read-try PATH     Likewise, skipped when PATH does not exist (also -write-try,
                                 -rw-try, -exec-try)
    --pivot-root                 Enter the new root with pivot_root (the default)
    --chroot, --no-pivot-root    Enter the new root with chroot instead
    --limit-memory SIZE          Memory limit, e.g. 512Mi (limits.memory)
    --limit-cpu CORES            CPU limit in cores, e.g. 1.5 (limits.cpu)
    --limit-pids N               Maximum number of processes (limits.pids)
    --net-bridge NAME            Bridge networking on NAME with NAT (network.mode: bridge);
                                 the subnet NAME serves if vbdecl made it, else 10.88.0.0/24;
                                 its addresses are kept in vbdecl's state directory
                                 ($VBDECL_STATE_DIR, else /var/lib/vbdecl for root and
                                 $XDG_STATE_HOME/vbdecl for others)
    --print-manifest             Print the equivalent vbdecl manifest and exit
"""


def program_name(argv0: str) -> str:
    return "bwrap" if os.path.basename(argv0) == "bwrap" else "vb"


def usage(prog: str, stream: object) -> None:
    print(f"usage: {prog} [OPTIONS...] [--] COMMAND [ARGS...]\n\n{USAGE_BODY}", end="",
          file=stream)  # type: ignore[call-overload]


def die(prog: str, message: str, level_prefix: bool) -> int:
    from vbdecl.vb.launch import say

    prefix = "<3>" if level_prefix else ""
    say(f"{prefix}{prog}: {message}")
    return 1


def warn(prog: str, warnings: list[str], level_prefix: bool) -> None:
    """bubblewrap's warnings (LOG_WARNING: ``<4>`` with --level-prefix)."""
    from vbdecl.vb.launch import say

    prefix = "<4>" if level_prefix else ""
    for message in warnings:
        say(f"{prefix}{prog}: {message}")


def _open_fds() -> list[int]:
    """The fds above 2 that vb's caller passed it (vb's own are close-on-exec)."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return []
    fds = []
    for name in names:
        fd = int(name)
        try:
            if fd > 2 and os.get_inheritable(fd):   # (listdir's own fd is closed again)
                fds.append(fd)
        except OSError:
            pass
    return fds


def _refusal(exc: Exception, argv: list[str], prog: str, level_prefix: bool) -> int:
    """What vb prints and returns when parsing ends without a sandbox to run."""
    from vbdecl.vb.parse import HelpRequested, UsageRequested, VersionRequested

    if isinstance(exc, HelpRequested):
        usage(argv[0] if argv else prog, sys.stdout)   # bubblewrap prints its argv[0]
        return 0
    if isinstance(exc, UsageRequested):
        usage(argv[0] if argv else prog, sys.stderr)   # bubblewrap: no command
        return 1
    if isinstance(exc, VersionRequested):
        if prog == "bwrap":     # bubblewrap's own line: scripts read its version in field 2
            print(f"bubblewrap {BWRAP_COMPAT}")
        else:
            print(f"{prog} (vbdecl {__version__}, bubblewrap {BWRAP_COMPAT} command line)")
        return 0
    return die(prog, str(exc), level_prefix)


def main(argv: list[str], exit_now: bool = False) -> int:
    from vbdecl.vb.parse import (
        HelpRequested,
        UsageRequested,
        VbUsageError,
        VersionRequested,
        parse,
        to_document,
    )

    prog = program_name(argv[0] if argv else "vb")
    args = argv[1:]
    if not args:
        usage(argv[0] if argv else prog, sys.stderr)
        return 1
    try:
        opts = parse(args)
        level_prefix = opts.level_prefix
        warn(prog, opts.warnings, level_prefix)
        doc = to_document(opts, inherit_fds=_open_fds())
        if opts.net_bridge:
            # (not in to_document: convert --from-bwrap writes no subnet of this host)
            from vbdecl.vb.bridge import subnet_for

            doc["spec"]["network"]["subnet"] = subnet_for(opts.net_bridge)
    except (HelpRequested, UsageRequested, VersionRequested, VbUsageError) as exc:
        level_prefix = bool(getattr(exc, "level_prefix", False))   # given before the error
        try:
            warn(prog, getattr(exc, "warnings", None) or [], level_prefix)
            code = _refusal(exc, argv, prog, level_prefix)
        except OSError as err:      # (vb --help | head, vb --version > /dev/full)
            code = _output_failed(err)
        return _leave(code, exit_now)

    if opts.print_manifest:
        from vbdecl.vb.manifest import NotExpressible, render

        try:
            print(render(doc, read_fds=True), end="")
            code = 0
        except NotExpressible as err:
            code = die(prog, "no manifest can say this: " + "; ".join(err.problems), level_prefix)
        except OSError as err:
            code = _output_failed(err)
        return _leave(code, exit_now)

    from vbdecl.vb.launch import launch

    return _leave(int(launch(doc, prog=prog, level_prefix=level_prefix)), exit_now)


def _output_failed(err: OSError) -> int:
    """The status for output vb could not write: 141 when the reader went away, as a
    program that SIGPIPE killed (bubblewrap is); else 1."""
    return 141 if isinstance(err, BrokenPipeError) else 1


def _leave(code: int, exit_now: bool) -> int:
    if exit_now:
        from vbdecl.entry import flush_and_exit

        flush_and_exit(code)
    return code

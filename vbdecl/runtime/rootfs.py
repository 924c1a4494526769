"""Build the environment's root filesystem, inside its own mount namespace.

:func:`setup_root` is called by the sandbox child once it is in its own
mount namespace (and user namespace, ids mapped, full capabilities there).
It works like bubblewrap, but on file descriptors:

1. Nothing done here reaches the host: the child made the mounts of the
   namespace it created private (vb: slaves, as bubblewrap's), and a joined
   namespace's are made slaves here.
2. A tmpfs (the *staging* area) is mounted over an existing directory
   (``/tmp``; ``/run``, ``/var/tmp``, ``/mnt`` if it is missing) and we
   ``pivot_root`` into it: the host tree is now ``/oldroot``, and the new
   root is built at ``/newroot`` (a fresh tmpfs, or ``spec.rootfs`` bound
   there). Nothing is ever created in the host's directories.
3. Every ``spec.filesystem`` entry is applied in manifest order. Targets are
   resolved with ``openat2(RESOLVE_IN_ROOT)`` from an fd on the new root
   (symlinks and ``..`` stay inside it; a path created here is created one
   component at a time with ``O_NOFOLLOW``), and mounts are attached with
   ``move_mount`` onto that fd: a symlink swapped in during setup can never
   redirect a mount or a write outside the root. Sources are host paths,
   resolved through an fd on the host root.
4. Network files (``/etc/resolv.conf``, ``/etc/hosts``) are written into the
   staging tmpfs and bound read-only over the targets: no host file is ever
   written.
5. ``/newroot`` becomes ``/`` (``pivot_root``; if the process root is not a
   mount point: ``MS_MOVE`` + ``chroot``), the staging tmpfs is detached with
   the host tree under it (files bound from it stay alive, unreachable by
   path) and the cwd is ``/``.

Defaults (bubblewrap's where ``vb`` needs them): tmpfs mode 0755, dir mode
0755 (parents too), file mode 0644 (bwrap: 0666 minus the usual umask 022),
bind-data mode 0600 (bwrap's mkstemp). Binds are recursive and
``nosuid`` (+ ``nodev`` except dev-bind); ro-bind is read-only recursively
(mount_setattr AT_RECURSIVE). ``remount-ro`` is not recursive (bwrap); a
target that is not a mount point is first bound onto itself. Overlay
``lower`` lists are top first (overlayfs and bwrap ``--overlay-src`` order).
An existing ``dir`` gets the declared mode (declarative; bwrap leaves it).
A ``file``, ``chmod`` or moded ``dir`` entry whose target is a symlink fails
rather than write or chmod through it (vb follows it, as bubblewrap).
"""

from __future__ import annotations

import _stat as stat
import errno

from vbdecl.errors import RuntimeSetupError, SysError
from vbdecl.plan.ids import fs_action_ids
from vbdecl.sys import mount as m
from vbdecl.sys import oslite as os
from vbdecl.sys.caps import in_initial_user_ns
from vbdecl.sys.proc import seal_imports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


STAGING_BASES = ("/tmp", "/run", "/var/tmp", "/mnt")

DEFAULT_MODES = {"tmpfs": 0o755, "dir": 0o755, "file": 0o644, "bind-data": 0o600}
# Entries whose mounts are filesystems made for the root: what is created in them is
# nowhere else (bind-data: the file itself, mounted on its target)
_FRESH_KINDS = ("tmpfs", "dev", "proc", "mqueue", "tmp-overlay", "bind-data")
# What of a manifest's proc is bound read-only onto itself (bubblewrap's four: place_proc)
PROC_COVERS = ("sys", "sysrq-trigger", "irq", "bus")
# What of a manifest's proc reads as empty (the host's /dev/null bound read-only over it,
# those that exist): host-wide information a sandbox has no use for, as runc masks it. The
# kernel keys any sandbox process may view (the host root's, without a user namespace), the
# host's timers (an activity side channel), the memory image, and the older kernels' stats.
PROC_MASKS = ("keys", "timer_list", "kcore", "sched_debug", "timer_stats", "latency_stats")
_DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
# What of an entry's mounts are the host's device nodes, not a filesystem made for the root
_HOST_NODES = {"dev": (*_DEV_NODES, "console"), "proc": PROC_MASKS}
_DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
              ("stderr", "/proc/self/fd/2"), ("core", "/proc/kcore"), ("ptmx", "pts/ptmx"))
_RESOLVE = m.RESOLVE_IN_ROOT | m.RESOLVE_NO_MAGICLINKS
_MAX_LINKS = 40
# The owners of the symlinks resolve() follows inside a root (None: any). vbdecl as the
# host's root follows only root's: a link another user made (the sandbox's process in a
# bound directory, on an earlier run or while a live environment runs) would get root to
# write, chmod or remove where that user may not (a review did). Set by set_link_policy
# for one build (or one helper); vb keeps bubblewrap's behaviour.
_link_owners: frozenset[int] | None = None
_ROOT_ONLY = frozenset({0})
# Who runs vbdecl, on the host (this module is loaded before any user namespace is
# entered; inside one, getuid() is the mapped id)
_CALLER_UID = os.getuid()


def set_link_policy(root_only: bool) -> None:
    """Follow only root's symlinks inside a root from now on in this process (see
    _link_owners), or any."""
    global _link_owners
    _link_owners = _ROOT_ONLY if root_only else None


# --- safe path resolution inside a root -------------------------------------

# Directories by (st_dev, st_ino): see resolve's fence
Fence = frozenset[tuple[int, int]]


def _refused_link(comp: str, path: str, fenced: bool, owner: int,
                  owners: frozenset[int] | None) -> OSError | None:
    """Why the symlink ``comp`` on the way to ``path`` is not followed, if it is not."""
    if fenced:
        why = f"the symlink {comp!r} on the way is in a directory the sandbox may write"
        hint = ("vbdecl follows no symlink below the source of a writable bind, an overlay's "
                "upper directory or a rootfs (the sandbox may have made it): point the entry "
                "at where the link leads")
    elif owners is not None and owner not in owners:
        why = f"the symlink {comp!r} on the way belongs to uid {owner}, and vbdecl, as root, follows only root's"
        hint = ("point the entry (its target, or its source) at where the link leads: another "
                "user's link, such as one the sandbox made in a bound directory, could lead root anywhere")
    else:
        return None
    exc = OSError(errno.ELOOP, why, path)
    exc.hint = hint  # type: ignore[attr-defined]
    exc.fenced = fenced  # type: ignore[attr-defined]
    return exc


def fence_of(root_fd: int, paths: list[str]) -> Fence:
    """The directories at ``paths`` (outermost first; each resolved inside the fence
    of those before it) by device and inode; what is missing or no directory is left
    out (its entry says so, or makes it)."""
    fence: Fence = frozenset()
    for path in paths:
        try:
            fd = resolve(root_fd, path, os.O_PATH, fence=fence)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
        finally:
            _close(fd)
        if stat.S_ISDIR(st.st_mode):
            fence |= {(st.st_dev, st.st_ino)}
    return fence


def _in_fence(fd: int, fence: Fence | None, above: bool) -> bool:
    if above or not fence:
        return above
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino) in fence


def _close(fd: int | None) -> None:
    if fd is not None and fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


def _split(path: str) -> list[str]:
    return [c for c in path.split("/") if c and c != "."]


def resolve(root_fd: int, path: str, flags: int = os.O_PATH, *, follow: bool = True,
            mode: int = 0, missing_ok: bool = False, symlinks: bool = True,
            fence: Fence | None = None) -> int:
    """Open ``path`` relative to ``root_fd`` as if ``root_fd`` were ``/``.

    Symlinks (absolute or relative) and ``..`` never leave the root. With
    ``follow=False`` the last component is not followed (O_NOFOLLOW). With
    ``symlinks=False`` no symlink is followed at all (ELOOP; the last component
    with O_PATH and follow=False is opened as the link). With ``missing_ok`` a
    missing path (or component) returns -1. ``fence``: directories, by (st_dev,
    st_ino), below which no symlink is followed (Builder.fence_writable).
    """
    if not follow:
        flags |= os.O_NOFOLLOW
    owners = _link_owners if symlinks else None
    if m.openat2_supported():
        careful = not symlinks or owners is not None or bool(fence)
        how = _RESOLVE | m.RESOLVE_NO_SYMLINKS if careful else _RESOLVE
        try:
            return m.openat2(root_fd, path or "/", flags, mode, how, missing_ok=missing_ok)
        except OSError as exc:
            if not symlinks or not careful or exc.errno != errno.ELOOP:
                raise
            # a link on the way: walk, following those of the owners we trust, outside the fence
    try:
        return _walk(root_fd, path, flags, follow, mode, symlinks, owners, fence or None)
    except FileNotFoundError:
        if missing_ok:
            return -1
        raise


def _walk(root_fd: int, path: str, flags: int, follow: bool, mode: int, symlinks: bool = True,
          owners: frozenset[int] | None = None, fence: Fence | None = None) -> int:
    """openat2(RESOLVE_IN_ROOT) for kernels without it (and for following only the
    symlinks of ``owners``, and none below the ``fence``): one component at a time."""
    todo = _split(path)
    stack = [os.dup(root_fd)]  # fds of the directories from the root down to the current one
    fenced = [_in_fence(root_fd, fence, False)]     # whether each is at or below the fence
    links = 0
    try:
        while todo:
            comp = todo.pop(0)
            if comp == "..":
                if len(stack) > 1:
                    _close(stack.pop())
                    fenced.pop()
                continue
            last = not todo
            try:
                fd = os.open(comp, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=stack[-1])
            except OSError as exc_:
                if exc_.errno != errno.ENOENT:
                    raise
                if last and flags & os.O_CREAT:
                    fd = os.open(comp, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=stack[-1])
                    return fd
                raise
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode) and (follow or not last):
                if not symlinks:
                    _close(fd)
                    raise OSError(errno.ELOOP, "a symlink on the way", path)
                refused = _refused_link(comp, path, fenced[-1], st.st_uid, owners)
                if refused is not None:
                    _close(fd)
                    raise refused
                try:    # the link checked, not whatever has its name by now
                    target = os.readlink("", dir_fd=fd)
                finally:
                    _close(fd)
                links += 1
                if links > _MAX_LINKS:
                    raise OSError(errno.ELOOP, "too many symlinks", path)
                if target.startswith("/"):
                    while len(stack) > 1:
                        _close(stack.pop())
                        fenced.pop()
                todo = _split(target) + todo
                continue
            if last:
                if flags & ~(os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY) or not flags & os.O_PATH:
                    _close(fd)
                    return os.open(comp, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=stack[-1])
                if flags & os.O_DIRECTORY and not stat.S_ISDIR(os.fstat(fd).st_mode):
                    _close(fd)
                    raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
                return fd
            fenced.append(_in_fence(fd, fence, fenced[-1]))
            stack.append(fd)
        return os.open(".", flags | os.O_CLOEXEC, dir_fd=stack[-1])
    finally:
        for fd in stack:
            _close(fd)


class Created(list[str]):
    """Paths created inside a root, oldest first, and the (st_dev, st_ino) each had
    when made: an undo removes only what is still that object (not a host file a
    later bind put at the path, nor what a link the sandbox planted leads to)."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: dict[str, tuple[int, int]] = {}

    def note(self, path: str, st: os.stat_result) -> None:
        self.append(path)
        self.ids[path] = (st.st_dev, st.st_ino)

    def merge(self, other: Created) -> None:
        self.extend(other)
        self.ids.update(other.ids)


def _note(created: list[str] | None, path: str, dir_fd: int, name: str) -> None:
    """Add ``path`` (``name`` in ``dir_fd``, just made) to ``created``."""
    if isinstance(created, Created):
        created.note(path, os.stat(name, dir_fd=dir_fd, follow_symlinks=False))
    elif created is not None:
        created.append(path)


def ensure_dir(root_fd: int, path: str, mode: int = 0o755, created: list[str] | None = None,
               *, parent_mode: int = 0o755, fence: Fence | None = None) -> int:
    """An O_PATH fd on directory ``path`` inside the root, creating what is missing.

    Missing components are created one at a time with ``mode`` (parents
    always 0755) and opened with O_NOFOLLOW, so a symlink swapped in between
    can never redirect the walk. ``created`` collects the paths created.
    """
    fd = resolve(root_fd, path, os.O_PATH | os.O_DIRECTORY, missing_ok=True, fence=fence)
    if fd >= 0:
        return fd
    comps = _split(path)
    fd = os.dup(root_fd)
    done = ""
    try:
        for i, comp in enumerate(comps):
            done += "/" + comp
            nxt = resolve(root_fd, done, os.O_PATH | os.O_DIRECTORY, missing_ok=True, fence=fence)
            if nxt < 0:
                try:
                    os.mkdir(comp, mode if i == len(comps) - 1 else parent_mode, dir_fd=fd)
                    _note(created, done, fd, comp)
                except FileExistsError:
                    pass
                nxt = os.open(comp, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                              dir_fd=fd)
            _close(fd)
            fd = nxt
        return fd
    except BaseException:
        _close(fd)
        raise


def ensure_parent(root_fd: int, path: str, created: list[str] | None = None,
                  parent_mode: int = 0o755) -> tuple[int, str]:
    """(fd of the parent directory, last component) of ``path``; parents are created."""
    parent, _, name = path.rstrip("/").rpartition("/")
    if not name or name in (".", ".."):
        raise OSError(errno.EINVAL, f"{path!r} has no last component")
    return ensure_dir(root_fd, parent or "/", parent_mode, created, parent_mode=parent_mode), name


def ensure_mountpoint(root_fd: int, path: str, is_dir: bool,
                      created: list[str] | None = None, parent_mode: int = 0o755) -> int:
    """An O_PATH fd on ``path``, created as a directory or an empty file if missing."""
    fd = resolve(root_fd, path, os.O_PATH, missing_ok=True)
    if fd >= 0:
        if is_dir != _isdir_fd(fd):
            # a mount cannot go onto a target of the other type (move_mount would say EINVAL)
            _close(fd)
            if is_dir:
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
            exc = IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
            exc.making_file = True    # type: ignore[attr-defined]  # (vb's words: _bwrap_message)
            raise exc
        return fd
    if is_dir:
        return ensure_dir(root_fd, path, 0o755, created, parent_mode=parent_mode)
    parent, name = ensure_parent(root_fd, path, created, parent_mode)
    try:
        try:
            _close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                           0o444, dir_fd=parent))   # bubblewrap's mode for file mount points
            _note(created, path, parent, name)
        except FileExistsError:
            pass
        except OSError as exc:
            exc.making_file = True    # type: ignore[attr-defined]  # (vb's words: _bwrap_message)
            raise
        return os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    finally:
        _close(parent)


class DataReadError(OSError):
    """Reading the data of a file or bind-data entry from its fd failed."""


def _read_fd(fd: int) -> bytes:
    """All of ``fd`` (closed then), in one buffer sized by the file's own size where it
    has one (a scale review: chunks joined held a 150 MB source twice)."""
    from io import FileIO  # (the interpreter's own: no import)

    try:
        with FileIO(fd, "rb", closefd=False) as f:
            return f.readall()
    finally:
        _close(fd)


# The most of a root's own /etc/hosts that network.hosts entries are added to
HOSTS_MAX = 1 << 20


def read_root_hosts(root_fd: int) -> str | None:
    """The /etc/hosts of the root at ``root_fd``, kept byte for byte whatever its
    encoding, which network.hosts entries are added to; None where there is none to
    take. The root is the sandbox's to fill, and this runs with vbdecl's privileges:
    only a regular file of at most HOSTS_MAX bytes, reached through no link (a review
    had a live environment's apply hang on a FIFO there while it held the lock, read
    /dev/zero until the host ran out of memory, and copy in a file the process itself
    could not read)."""
    try:
        fd = resolve(root_fd, "/etc/hosts", os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY, symlinks=False)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > HOSTS_MAX:
            return None
        data = os.read(fd, HOSTS_MAX + 1)
    except OSError:
        return None
    finally:
        _close(fd)
    return None if len(data) > HOSTS_MAX else data.decode("utf-8", "surrogateescape")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


# --- the builder ----------------------------------------------------------------

class Made:
    """What the host phase of one entry produced: detached mounts and data.

    ``mounts``: (path below the target, mount fd, is_dir), attached in order;
    those whose path is in ``optional`` are left out where the root cannot take
    their mount point (read-only, or not ours to write).
    """

    __slots__ = ("data", "mounts", "optional", "skip")

    def __init__(self) -> None:
        self.mounts: list[tuple[str, int, bool]] = []
        self.data: bytes | None = None
        self.skip = False
        self.optional: set[str] = set()

    def close(self) -> None:
        for _, fd, _ in self.mounts:
            _close(fd)
        self.mounts.clear()


class Builder:
    """Applies filesystem entries into a root, in two phases per entry.

    :meth:`make` runs where host paths mean the host (it resolves sources
    through ``host_fd``, clones bind sources, creates tmpfs, overlay and
    data mounts as detached mounts); :meth:`place` runs where the root is
    (it creates mount points inside the root and attaches, and does dir,
    file, symlink, chmod, proc and mqueue). A run does both in the sandbox
    child; a live environment does ``make`` in a helper in the host's
    namespaces and ``place`` after it joined the environment's.

    ``host_fd``: the host root; ``root_path``: where the new root is in our
    current view; ``staging_fd``: a private tmpfs directory for temporary
    files (bind-data, tmp-overlay upper/work); ``host_prefix``: the host's
    ``/`` as a path in our view (for /proc/self/fd).
    """

    def __init__(self, host_fd: int, root_path: str | None, staging_fd: int,
                 host_prefix: str, userns: bool | None = None, tty: str | None = None) -> None:
        self.host_fd = host_fd
        self.root_path = root_path
        self.staging_fd = staging_fd
        self.host_prefix = host_prefix
        self.root_fd = -1
        if root_path is not None:
            self.set_root(root_path)
        self.counter = 0
        self.host_created: list[str] = []   # host dirs created (overlay upper/work), for rollback
        self.created = Created()            # paths created inside the root (mount points, dirs)
        self.staged: list[str] = []         # data files in the staging area, unlinked once bound
        self.userns = not in_initial_user_ns() if userns is None else userns  # overlays need userxattr
        self.tty = tty      # the host path of the terminal on stdin: bound as /dev/console
        # What a run changes of the host through binds (see host_changes), when asked
        self.track_host = False
        self.own_files: list[str] = []      # files of file entries (removed whatever their size)
        # (path, mode before, st_dev, st_ino) of what chmod and dir entries changed
        self.modes: list[tuple[str, int, int, int]] = []
        self.fresh_devs: set[int] = set()   # filesystems made for the root (nothing of the host's)
        # vb writes and chmods through a link at the target, as bubblewrap (see _final)
        self.through_links = False
        # Host directories the sandbox may write (fence_writable): no link below them is
        # followed to a source
        self.fence: Fence = frozenset()
        # The host (uid, gid) of the root of the sandbox's user namespace, when what make()
        # creates is made outside it (a live environment's helper, as root on the host):
        # the tmpfs, staged files and overlay uppers it makes are then that root's, as
        # those of a run made inside the namespace are; None: the maker's own
        self.owner: tuple[int, int] | None = None

    def tmpfs_options(self, mode: str) -> list[tuple[str, str | int | None]]:
        """A new tmpfs's options for its root directory: ``mode``, and :attr:`owner`."""
        opts: list[tuple[str, str | int | None]] = [("mode", mode)]
        if self.owner is not None:
            opts += [("uid", str(self.owner[0])), ("gid", str(self.owner[1]))]
        return opts

    def _own(self, fd: int) -> None:
        """Give what ``fd`` (any open file, O_PATH too) is to :attr:`owner`, if any."""
        if self.owner is not None:
            os.chown(f"/proc/self/fd/{fd}", *self.owner)

    def set_root(self, root_path: str) -> None:
        _close(self.root_fd)
        self.root_path = root_path
        self.root_fd = os.open(root_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        _close(self.root_fd)
        self.root_fd = -1

    def _host(self, path: str, flags: int = os.O_PATH) -> int:
        """A host path (a source), opened from the host's root, following no symlink
        below a directory the sandbox may write (see fence_writable)."""
        return resolve(self.host_fd, path, flags, fence=self.fence)

    def fence_writable(self, paths: list[str]) -> None:
        """No symlink below ``paths`` (sandbox_writable) is followed to a host source
        from now on: the sandbox's process (root's, as likely as not) could have put
        one there, on an earlier run or while a live environment runs, to have a later
        bind or copy take a host path the manifest does not give it (a security review
        bound the host's /etc so). Known by device and inode, not by their spelling."""
        self.fence = fence_of(self.host_fd, paths)

    def apply(self, e: dict[str, Any]) -> None:
        # vb: parents created for this entry get bubblewrap's mode (from --perms)
        self.parent_mode = int(e.get("parent_mode", 0o755))
        made = self.make(e)
        try:
            self.place(e, made)
        except OSError as exc:
            exc.placing = True    # type: ignore[attr-defined]  # (vb's words: _bwrap_message)
            raise
        finally:
            made.close()
            self.unlink_staged()

    def unlink_staged(self) -> None:
        """Remove staged data files (once bound, the mounts keep their inodes)."""
        while self.staged:
            try:
                os.unlink(self.staged.pop(), dir_fd=self.staging_fd)
            except OSError:
                pass

    def make(self, e: dict[str, Any]) -> Made:
        made = Made()
        fn = getattr(self, "make_" + e["type"].replace("-", "_"), None)
        try:
            if fn is not None:
                fn(e, made)
            if self.track_host and e["type"] in _FRESH_KINDS:
                # (not the host's device nodes a dev entry binds, nor the null device a proc
                # entry masks with: they are the host's devtmpfs)
                host_nodes = _HOST_NODES.get(e["type"], ())
                self.fresh_devs.update(os.fstat(fd).st_dev for sub, fd, _ in made.mounts
                                       if sub.lstrip("/") not in host_nodes)
        except BaseException:
            made.close()
            raise
        return made

    def host_changes(self) -> dict[str, Any] | None:
        """What of the root's changes landed on the host (through a bind, a rw overlay or
        a host rootfs: anything but the filesystems made for the root), for a run to
        undo once the sandbox is gone: the paths created, oldest first, with the
        identity (st_dev, st_ino) each had when made, the files of file entries among
        them, and the modes from before of what it chmodded. Whether a path is the
        host's is decided by the filesystem it was made on, so that what was made on
        the root's tmpfs and then covered by a bind is not taken for the bind's.
        None when nothing did."""
        ids = self.created.ids
        paths = [p for p in self.created if p in ids and ids[p][0] not in self.fresh_devs]
        modes = [change for change in self.modes if change[2] not in self.fresh_devs]
        if not paths and not modes:
            return None
        return {"paths": paths, "ids": {p: list(ids[p]) for p in paths},
                "own_files": [p for p in self.own_files if p in paths], "modes": modes}

    def place(self, e: dict[str, Any], made: Made) -> None:
        if made.skip:
            return
        fn = getattr(self, "place_" + e["type"].replace("-", "_"), None)
        if fn is not None:
            fn(e, made)
        else:
            self._attach_made(e["target"], made)

    def _attach_made(self, target: str, made: Made) -> None:
        while made.mounts:
            sub, fd, is_dir = made.mounts.pop(0)
            try:
                self._attach(fd, target.rstrip("/") + sub if sub else target, is_dir)
            except OSError as exc:
                if sub not in made.optional or exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                    raise
            finally:
                _close(fd)

    def _attach(self, mnt_fd: int, target: str, is_dir: bool) -> None:
        tfd = ensure_mountpoint(self.root_fd, target, is_dir, self.created,
                                getattr(self, "parent_mode", 0o755))
        try:
            m.attach(mnt_fd, tfd)
        finally:
            _close(tfd)
        if not _split(target) and self.root_path is not None:
            self.set_root(self.root_path)   # something now covers the root: look at the top

    # --- binds

    def _clone_source(self, e: dict[str, Any], attrs: int, made: Made) -> None:
        fd = e.get("fd")
        if fd is not None:
            src = os.dup(int(fd))
        else:
            try:
                src = self._host(e["source"])
            except OSError as exc_:
                if exc_.errno == errno.ENOENT and e.get("optional"):
                    made.skip = True
                    return
                raise
        try:
            is_dir = stat.S_ISDIR(os.fstat(src).st_mode)
            try:
                clone = m.clone_tree(src, recursive=True)
            except OSError as exc:
                if fd is None or exc.errno != errno.EINVAL:
                    raise
                clone = self._clone_foreign(src)
        finally:
            _close(src)
        made.mounts.append(("", clone, is_dir))
        m.set_attrs(clone, attrs, recursive=True)

    def _clone_foreign(self, fd: int) -> int:
        """Clone the tree an fd opened in another mount namespace refers to.

        open_tree refuses mounts of another namespace: find the same object
        by its path in our copy of the host tree and check it is the same
        inode before binding it (vb's --bind-fd from a caller's fd).
        """
        path = os.readlink(f"{self.host_prefix.rstrip('/')}/proc/self/fd/{fd}")
        want = os.fstat(fd)
        same = self._host(path)
        try:
            got = os.fstat(same)
            if (got.st_dev, got.st_ino) != (want.st_dev, want.st_ino):
                raise OSError(errno.ESTALE, f"fd {fd} ({path}) is not reachable in the host tree")
            return m.clone_tree(same, recursive=True)
        finally:
            _close(same)

    def make_bind(self, e: dict[str, Any], made: Made) -> None:
        self._clone_source(e, m.MOUNT_ATTR_NOSUID | m.MOUNT_ATTR_NODEV, made)

    def make_ro_bind(self, e: dict[str, Any], made: Made) -> None:
        self._clone_source(e, m.MOUNT_ATTR_NOSUID | m.MOUNT_ATTR_NODEV | m.MOUNT_ATTR_RDONLY, made)

    def make_dev_bind(self, e: dict[str, Any], made: Made) -> None:
        self._clone_source(e, m.MOUNT_ATTR_NOSUID, made)

    # --- kernel filesystems

    def make_proc(self, e: dict[str, Any], made: Made) -> None:
        if e.get("host"):   # vb without a pid namespace: bubblewrap binds the host's /proc
            self._clone_source({"source": "/proc", "target": e["target"]},
                               m.MOUNT_ATTR_NOSUID | m.MOUNT_ATTR_NODEV, made)
            return
        # A proc instance belongs to the pid namespace of its creator; it is made
        # while a fully visible proc is still in our mount namespace (in a user
        # namespace the kernel refuses a new proc otherwise).
        proc = m.new_mount("proc", [], m.MOUNT_ATTR_NOSUID | m.MOUNT_ATTR_NODEV | m.MOUNT_ATTR_NOEXEC,
                           source="proc")
        made.mounts.append(("", proc, True))
        if "cover" not in e:    # a manifest's proc (vb's shows all, as bubblewrap's)
            self._masks(proc, made)

    def _masks(self, proc: int, made: Made) -> None:
        """The host's /dev/null, read-only, for each of PROC_MASKS the new proc ``proc``
        has, to be attached over it (cloned here, where the host's /dev is ours to clone)."""
        null = self._host("/dev/null")
        try:
            st = os.fstat(null)
            if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(1, 3):
                raise RuntimeSetupError("cannot hide the host's keys and timers in the new /proc: the "
                                        "host's /dev/null is not the null device",
                                        hint="make /dev/null the null device again (mknod -m 666 /dev/null c 1 3)")
            for name in PROC_MASKS:
                try:
                    os.stat(name, dir_fd=proc, follow_symlinks=False)
                except FileNotFoundError:
                    continue    # (not in this kernel)
                clone = m.clone_tree(null, recursive=False)
                made.mounts.append(("/" + name, clone, False))
                m.set_attrs(clone, m.MOUNT_ATTR_RDONLY | m.MOUNT_ATTR_NOSUID | m.MOUNT_ATTR_NOEXEC,
                            recursive=False)
        finally:
            _close(null)

    def place_proc(self, e: dict[str, Any], made: Made) -> None:
        self._attach_made(e["target"], made)
        if "cover" in e:    # vb: what bubblewrap covers, where its setup could write
            self._cover_ro(e["target"], list(e["cover"]), as_root=bool(e.get("cover_as_root")))
        else:
            # A manifest's proc: the host's sysctls (kernel.modprobe, core_pattern), sysrq,
            # irq affinities and bus devices are never writable from the sandbox. (bubblewrap
            # asks access(2), which says no for the directory /proc/sys even to root.)
            self._cover_ro(e["target"], list(PROC_COVERS), writable_only=False)

    def _cover_ro(self, target: str, names: list[str], *, as_root: bool = False,
                  writable_only: bool = True) -> None:
        """Bind NAMES under TARGET read-only onto themselves, those that exist; with
        ``writable_only`` (vb: bubblewrap's rule for /proc/sys, sysrq-trigger, irq and
        bus) only the writable ones. Writable: for our real uid (access(2)), or
        ``as_root`` with our effective capabilities (as uid 0 of our user namespace,
        where bubblewrap sets up, checks it)."""
        dfd = resolve(self.root_fd, target, os.O_PATH | os.O_DIRECTORY)
        try:
            for name in names:
                if writable_only and not os.access(name, os.W_OK, dir_fd=dfd, effective_ids=as_root):
                    continue    # already read-only, or absent
                try:
                    src = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
                except FileNotFoundError:
                    continue
                try:
                    clone = m.clone_tree(src, recursive=False)
                    try:
                        m.set_attrs(clone, m.MOUNT_ATTR_RDONLY | m.MOUNT_ATTR_NOSUID | m.MOUNT_ATTR_NODEV,
                                    recursive=False)
                        m.attach(clone, src)
                    finally:
                        _close(clone)
                finally:
                    _close(src)
        finally:
            _close(dfd)

    def make_mqueue(self, e: dict[str, Any], made: Made) -> None:
        # An mqueue instance belongs to the ipc namespace of its creator. No mount
        # flags, as bubblewrap (mqueue holds neither devices nor executables).
        made.mounts.append(("", m.new_mount("mqueue", [], source="mqueue"), True))

    def make_tmpfs(self, e: dict[str, Any], made: Made) -> None:
        mode = e.get("mode")
        opts = self.tmpfs_options(f"{DEFAULT_MODES['tmpfs'] if mode is None else mode:04o}")
        if e.get("size"):
            opts.append(("size", str(int(e["size"]))))
        made.mounts.append(("", m.new_mount("tmpfs", opts, m.MOUNT_ATTR_NOSUID | m.MOUNT_ATTR_NODEV,
                                            source="tmpfs"), True))

    def make_dev(self, e: dict[str, Any], made: Made) -> None:
        made.mounts.append(("", m.new_mount("tmpfs", self.tmpfs_options("0755"),
                                            m.MOUNT_ATTR_NOSUID | m.MOUNT_ATTR_NODEV,
                                            source="tmpfs"), True))
        nodes = [(n, "/dev/" + n) for n in _DEV_NODES]
        if self.tty:
            nodes.append(("console", self.tty))
        for name, path in nodes:
            try:
                src = self._host(path)
            except OSError as exc_:
                if exc_.errno in (errno.ENOENT, errno.ENXIO):
                    continue
                raise
            try:
                clone = m.clone_tree(src, recursive=False)
            finally:
                _close(src)
            made.mounts.append(("/" + name, clone, False))
            # Read-only: the nodes are the host's inodes (the caller's terminal among
            # them), which root inside could chmod, chown or touch; I/O goes on as before.
            m.set_attrs(clone, m.MOUNT_ATTR_NOSUID | m.MOUNT_ATTR_RDONLY, recursive=False)
        if e.get("shm") != "dir":   # vb: bubblewrap's /dev/shm is a plain directory
            made.mounts.append(("/shm", m.new_mount("tmpfs", self.tmpfs_options("1777"),
                                                    m.MOUNT_ATTR_NOSUID | m.MOUNT_ATTR_NODEV,
                                                    source="tmpfs"), True))
        made.mounts.append(("/pts", m.new_mount(
            "devpts", [("newinstance", None), ("ptmxmode", "0666"), ("mode", "620")],
            m.MOUNT_ATTR_NOSUID | m.MOUNT_ATTR_NOEXEC, source="devpts"), True))

    def place_dev(self, e: dict[str, Any], made: Made) -> None:
        target = e["target"]
        sub, fd, _ = made.mounts.pop(0)
        try:
            self._attach(fd, target, True)
        finally:
            _close(fd)
        dev = resolve(self.root_fd, target, os.O_PATH | os.O_DIRECTORY)
        try:
            for name, points_to in _DEV_LINKS:
                os.symlink(points_to, name, dir_fd=dev)
            os.mkdir("shm", 0o755 if e.get("shm") == "dir" else 0o1777, dir_fd=dev)
            os.mkdir("pts", 0o755, dir_fd=dev)
            while made.mounts:
                sub, fd, is_dir = made.mounts.pop(0)
                name = sub.lstrip("/")
                try:
                    if not is_dir:
                        _close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                                       os.O_CLOEXEC, 0o666, dir_fd=dev))
                    tfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dev)
                    try:
                        m.attach(fd, tfd)
                    finally:
                        _close(tfd)
                finally:
                    _close(fd)
        finally:
            _close(dev)

    # --- plain files and directories

    def place_dir(self, e: dict[str, Any], made: Made) -> None:
        mode = e.get("mode")
        created = Created()
        fd = ensure_dir(self.root_fd, e["target"], DEFAULT_MODES["dir"] if mode is None else mode,
                        created, parent_mode=getattr(self, "parent_mode", 0o755))
        self.created.merge(created)
        if mode is not None and not self._final(e["target"]):
            _close(fd)
            fd = resolve(self.root_fd, e["target"], os.O_PATH, follow=False)
            _refuse_link(fd, e["target"])
        try:
            # mkdir leaves out setgid (and a setgid parent adds it): set the mode after it,
            # unless the mode only applies to a new directory as made (vb: bubblewrap's --perms)
            if mode is not None and not e.get("keep_mode") and (
                    not created or stat.S_IMODE(os.fstat(fd).st_mode) != mode):
                if self.track_host and e["target"] not in created:
                    self._note_mode(e["target"], fd)
                m.fchmod_path_fd(fd, mode)
        finally:
            _close(fd)

    def _content(self, e: dict[str, Any]) -> bytes:
        if e.get("fd") is not None:
            try:
                return _read_fd(int(e["fd"]))
            except OSError as exc:
                raise DataReadError(exc.errno, exc.strerror) from exc
        if e.get("content") is not None:
            c = e["content"]
            return c.encode() if isinstance(c, str) else bytes(c)
        if e.get("source") is not None:
            data = _read_fd(self._host(e["source"], os.O_RDONLY))
            pinned = e.get("source_sha256")     # (engine.sources.pin_file_sources)
            if pinned is not None and _sha256_hex(data) != pinned:
                raise RuntimeSetupError(f"file source {e['source']} changed since the plan was made",
                                        hint="plan the manifest again, or put the file back as it was")
            return data
        return b""

    def make_file(self, e: dict[str, Any], made: Made) -> None:
        made.data = self._content(e)

    def place_file(self, e: dict[str, Any], made: Made) -> None:
        mode = DEFAULT_MODES["file"] if e.get("mode") is None else e["mode"]
        parent, name = ensure_parent(self.root_fd, e["target"], self.created,
                                     getattr(self, "parent_mode", 0o755))
        try:
            try:
                st = os.stat(name, dir_fd=parent, follow_symlinks=False)
                new = False
            except FileNotFoundError:
                new = True
        finally:
            _close(parent)
        if (not new and self.track_host and stat.S_ISREG(st.st_mode) and st.st_dev not in self.fresh_devs
                and self.created.ids.get(e["target"]) != (st.st_dev, st.st_ino)):
            # (an unprivileged review: the host's file was overwritten, and its mode changed,
            # for good; a run keeps no copy of a file's content to put back. Not one this
            # build made: by identity, since a later bind may show a host's file there)
            raise RuntimeSetupError(
                f"file {e['target']}: a file of the host's is there (in a bound directory, the "
                "rootfs directory or a rw overlay's upper): a run leaves the host as it found it, "
                "and writing it would change the host's files for good",
                hint="use a bind-data entry, which shows its content there for the run only, or "
                     "a target the host does not have")
        try:
            fd = resolve(self.root_fd, e["target"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode=mode,
                         follow=self._final(e["target"]))
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                link = resolve(self.root_fd, e["target"], os.O_PATH, follow=False)
                _refuse_link(link, e["target"])
                _close(link)
            raise
        try:
            if new:
                self.created.note(e["target"], os.fstat(fd))
                self.own_files.append(e["target"])
            _write_all(fd, made.data or b"")
            os.fchmod(fd, mode)
        finally:
            _close(fd)

    def _staged_clone(self, data: bytes, mode: int, readonly: bool) -> int:
        """A detached read-only (or not) bind of a new file holding ``data`` (staging area)."""
        self.counter += 1
        name = f"data-{os.getpid()}-{self.counter}"
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                     dir_fd=self.staging_fd)
        self.staged.append(name)
        try:
            self._own(fd)
            _write_all(fd, data)
            os.fchmod(fd, mode)
            clone = m.clone_tree(fd, recursive=False)
        finally:
            _close(fd)
        try:
            attrs = m.MOUNT_ATTR_NOSUID | m.MOUNT_ATTR_NODEV | (m.MOUNT_ATTR_RDONLY if readonly else 0)
            m.set_attrs(clone, attrs, recursive=False)
        except BaseException:
            _close(clone)
            raise
        return clone

    def make_bind_data(self, e: dict[str, Any], made: Made) -> None:
        mode = DEFAULT_MODES["bind-data"] if e.get("mode") is None else e["mode"]
        made.mounts.append(("", self._staged_clone(self._content(e), mode, bool(e.get("readonly"))),
                            False))

    def place_symlink(self, e: dict[str, Any], made: Made) -> None:
        points_to = e["points_to"]
        parent, name = ensure_parent(self.root_fd, e["target"], self.created,
                                     getattr(self, "parent_mode", 0o755))
        try:
            try:
                os.symlink(points_to, name, dir_fd=parent)
                _note(self.created, e["target"], parent, name)
            except FileExistsError:
                try:
                    existing = os.readlink(name, dir_fd=parent)
                except OSError:
                    existing = None
                if existing != points_to:
                    raise OSError(errno.EEXIST, f"{e['target']} already exists and is not a symlink "
                                  f"to {points_to!r}") from None
        finally:
            _close(parent)

    def _note_mode(self, path: str, fd: int) -> None:
        st = os.fstat(fd)
        self.modes.append((path, stat.S_IMODE(st.st_mode), st.st_dev, st.st_ino))

    def _final(self, target: str) -> bool:
        """Whether to follow a symlink at ``target`` to write or chmod what it leads to.
        Not for a manifest's entries: the link may be one the sandbox's process planted
        in a bound directory on an earlier run, leading to a file it may not change
        itself (root would do it for it). ``_refuse_link`` says so."""
        return self.through_links

    def place_chmod(self, e: dict[str, Any], made: Made) -> None:
        fd = resolve(self.root_fd, e["target"], os.O_PATH, follow=self._final(e["target"]))
        _refuse_link(fd, e["target"])
        try:
            if self.track_host:
                self._note_mode(e["target"], fd)
            m.fchmod_path_fd(fd, e["mode"])
        finally:
            _close(fd)

    def place_remount_ro(self, e: dict[str, Any], made: Made) -> None:
        fd = resolve(self.root_fd, e["target"], os.O_PATH)
        try:
            if not m.is_mount_root(fd):
                clone = m.clone_tree(fd, recursive=True)
                is_dir = _isdir_fd(fd)
                _close(fd)
                fd = -1
                try:
                    self._attach(clone, e["target"], is_dir)
                finally:
                    _close(clone)
                fd = resolve(self.root_fd, e["target"], os.O_PATH)
            m.set_attrs(fd, m.MOUNT_ATTR_RDONLY, recursive=False)
        finally:
            _close(fd)

    # --- overlays (made whole on the host side: overlayfs wants its layers in
    # the creator's mount namespace)

    def _overlay(self, lowers: list[str], upper: int | None, work: int | None,
                 attrs: int, userxattr: bool) -> int:
        lower_fds: list[int] = []
        try:
            for p in lowers:
                lower_fds.append(self._host(p, os.O_PATH | os.O_DIRECTORY))
            extra: list[tuple[str, str | int | None]] = []
            if userxattr or (upper is not None and self.userns):
                extra.append(("userxattr", None))
            try:
                opts: list[tuple[str, str | int | None]] = [("lowerdir+", fd) for fd in lower_fds]
                if upper is not None and work is not None:
                    opts += [("upperdir", upper), ("workdir", work)]
                return m.new_mount("overlay", opts + extra, attrs, source="overlay")
            except SysError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                # Kernels before 6.13 take layers only as paths (before 6.8 only as
                # one colon-separated "lowerdir", with ':' ',' '\\' escaped).
                layers: list[tuple[str, str | int | None]] = []
                if upper is not None and work is not None:
                    layers = [("upperdir", self._path_of(upper)), ("workdir", self._path_of(work))]
                paths = [self._path_of(fd) for fd in lower_fds]
                try:
                    return m.new_mount("overlay", [("lowerdir+", p) for p in paths] + layers + extra,
                                       attrs, source="overlay")
                except SysError as exc2:
                    if exc2.errno != errno.EINVAL:
                        raise
                joined = ":".join(_ovl_escape(p) for p in paths)
                return m.new_mount("overlay", [("lowerdir", joined), *layers, *extra], attrs,
                                   source="overlay")
        finally:
            for fd in lower_fds:
                _close(fd)

    def _path_of(self, fd: int) -> str:
        return os.readlink(f"{self.host_prefix.rstrip('/')}/proc/self/fd/{fd}")

    def make_overlay(self, e: dict[str, Any], made: Made) -> None:
        upper = work = -1
        try:
            upper = ensure_dir(self.host_fd, e["upper"], 0o755, self.host_created, fence=self.fence)
            work = ensure_dir(self.host_fd, e["work"], 0o755, self.host_created, fence=self.fence)
            made.mounts.append(("", self._overlay(list(e["lower"]), upper, work,
                                                  m.MOUNT_ATTR_NOSUID | m.MOUNT_ATTR_NODEV,
                                                  bool(e.get("userxattr"))), True))
        finally:
            _close(upper)
            _close(work)

    def make_tmp_overlay(self, e: dict[str, Any], made: Made) -> None:
        self.counter += 1
        base = f"overlay-{os.getpid()}-{self.counter}"
        os.mkdir(base, 0o755, dir_fd=self.staging_fd)
        upper = work = -1
        try:
            upper = ensure_dir(self.staging_fd, f"{base}/upper")
            work = ensure_dir(self.staging_fd, f"{base}/work")
            self._own(upper)        # (the overlay's root directory is its upper's)
            made.mounts.append(("", self._overlay(list(e["lower"]), upper, work,
                                                  m.MOUNT_ATTR_NOSUID | m.MOUNT_ATTR_NODEV,
                                                  bool(e.get("userxattr"))), True))
        finally:
            _close(upper)
            _close(work)

    def make_ro_overlay(self, e: dict[str, Any], made: Made) -> None:
        lowers = list(e["lower"])
        attrs = m.MOUNT_ATTR_NOSUID | m.MOUNT_ATTR_NODEV | m.MOUNT_ATTR_RDONLY
        if len(lowers) == 1:
            # overlayfs needs an upper or two lowers: one lower is a read-only bind.
            self._clone_source({"source": lowers[0], "target": e["target"]}, attrs, made)
        else:
            made.mounts.append(("", self._overlay(lowers, None, None, attrs, bool(e.get("userxattr"))), True))

    # --- network files

    def make_net_files(self, p: dict[str, Any], made: Made, hosts_base: str | None = None) -> None:
        """/etc/resolv.conf (of ``dns``; the host's without, in every network mode; none
        with an empty list) and /etc/hosts (with ``hosts``) as read-only binds of staged
        files.

        ``p``: ``dns``, ``hosts``, ``hostname``.
        ``hosts_base``: the root's own /etc/hosts, if any (else localhost lines).
        """
        dns, hosts, hostname = p.get("dns"), p.get("hosts"), p.get("hostname")
        ro = m.MOUNT_ATTR_RDONLY | m.MOUNT_ATTR_NOSUID | m.MOUNT_ATTR_NODEV
        if dns:
            text = "".join(f"nameserver {a}\n" for a in dns)
            made.mounts.append(("/etc/resolv.conf", self._staged_clone(text.encode(), 0o644, True),
                                False))
        elif dns is None:
            sub = Made()
            try:
                self._clone_source({"source": "/etc/resolv.conf", "target": "/etc/resolv.conf",
                                    "optional": True}, ro, sub)
            except OSError as exc:
                # the host's /etc is writable by the sandbox (a writable bind) and its
                # resolv.conf a link (systemd-resolved): not followed, and not needed,
                # since the sandbox has that /etc as it is
                if not getattr(exc, "fenced", False):
                    raise
            made.mounts += [("/etc/resolv.conf", fd, False) for _, fd, _ in sub.mounts]
            # (a rootfs directory that is read-only, or not root's to write, and has no
            # /etc/resolv.conf to mount on: without it, as before dns meant it everywhere)
            made.optional.add("/etc/resolv.conf")
        if hosts:
            base = hosts_base if hosts_base is not None else \
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            if base and not base.endswith("\n"):
                base += "\n"
            if hostname:
                base += f"127.0.1.1\t{hostname}\n"
            base += "".join(f"{addr}\t{name}\n" for name, addr in hosts.items())
            made.mounts.append(("/etc/hosts", self._staged_clone(base.encode(), 0o644, True), False))

    def root_hosts(self) -> str | None:
        return read_root_hosts(self.root_fd)

    def net_files(self, p: dict[str, Any]) -> None:
        made = Made()
        try:
            self.make_net_files(p, made, self.root_hosts())
            self._attach_made("", made)
        finally:
            made.close()
            self.unlink_staged()

    def rollback_host(self) -> None:
        """Remove the host directories this setup created (overlay upper/work), if empty."""
        remove_host_dirs(self.host_fd, self.host_created)
        self.host_created.clear()


def remove_created(root_fd: int, created: list[str], *, own_files: list[str],
                   mounts_at: str | None = None, ids: dict[str, tuple[int, int]] | None = None,
                   only_known: bool = False, kept: list[str] | None = None) -> list[str]:
    """Remove what was created in the root, newest first: empty dirs, empty files,
    symlinks, and ``own_files`` (regular files that file entries wrote) whatever
    their size. What is gone or changed kind meanwhile is left. ``mounts_at``: the
    root's path in our view, to detach first what is mounted on a path (the mount
    points of a root that is done with). A path in ``ids`` is removed only while it
    is still the object made (st_dev, st_ino): a sandboxed process may have swapped
    a link in on the way. ``only_known`` (a run's undo): only paths in ``ids``, and
    no symlink followed on the way. Returns the paths that stayed for another reason
    than that (or than a directory the process wrote into: in ``kept``, if given)."""
    symlinks = not only_known
    failed = []
    for path in reversed(created):
        parent, _, name = path.rstrip("/").rpartition("/")
        made = None if ids is None else ids.get(path)
        if only_known and made is None:
            continue
        try:
            pfd = resolve(root_fd, parent or "/", os.O_PATH | os.O_DIRECTORY, symlinks=symlinks)
        except OSError:
            continue
        try:
            while mounts_at is not None and _detach_at(root_fd, path, mounts_at, symlinks):
                pass
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            if made is not None and (st.st_dev, st.st_ino) != tuple(made):
                continue
            if stat.S_ISDIR(st.st_mode):
                os.rmdir(name, dir_fd=pfd)
            elif stat.S_ISLNK(st.st_mode) or (stat.S_ISREG(st.st_mode)
                                              and (st.st_size == 0 or path in own_files)):
                os.unlink(name, dir_fd=pfd)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                if kept is not None:
                    kept.append(path)
            elif exc.errno != errno.ENOENT:
                failed.append(path)
        finally:
            _close(pfd)
    return failed


def _detach_at(root_fd: int, path: str, root_path: str, symlinks: bool = True) -> bool:
    """Detach the top mount on ``path`` of the root (at ``root_path`` in our view);
    False when there is none."""
    try:
        fd = resolve(root_fd, path, os.O_PATH, follow=False, symlinks=symlinks)
    except OSError:
        return False
    try:
        if not m.is_mount_root(fd):
            return False
        m.umount2(root_path.rstrip("/") + path, m.MNT_DETACH | m.UMOUNT_NOFOLLOW)
        return True
    except OSError:
        return False
    finally:
        _close(fd)


def undo_host_changes(root_fd: int, changes: dict[str, Any], root_path: str) -> list[str]:
    """Set back the modes and remove the paths of Builder.host_changes, the root being
    at ``root_path`` in a mount namespace that is done with (its read-only mounts on
    the way are made writable: a remount-ro after the entries made them so). No
    symlink is followed on the way, and only what is still the object that was made
    or chmodded is touched: the sandbox's process may have swapped links or other
    files in. Returns what could not be undone, in words (what is no longer as it
    was made is left, and not counted)."""
    modes = changes.get("modes") or []
    paths = list(changes.get("paths") or [])
    _writable_on_the_way(root_fd, [p for p, *_ in modes] + [p.rstrip("/").rpartition("/")[0] for p in paths])
    failed = []
    for path, mode, dev, ino in reversed(modes):
        if not _chmod_back(root_fd, path, int(mode), (dev, ino)):
            failed.append(f"set back the mode of {path}")
    ids = {p: (int(i[0]), int(i[1])) for p, i in (changes.get("ids") or {}).items()}
    stayed = remove_created(root_fd, paths, own_files=list(changes.get("own_files") or []),
                            mounts_at=root_path, ids=ids, only_known=True)
    return failed + [f"remove {path}" for path in stayed]


def _writable_on_the_way(root_fd: int, paths: list[str]) -> None:
    """Clear the read-only flag of each mount from the root down to each of ``paths``
    (no symlink followed). Mounts read-only in the filesystem itself, or locked so
    by a more privileged namespace, stay as they are."""
    places = {"/"}
    for path in paths:
        parts = [p for p in path.split("/") if p]
        places.update("/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1))
    for place in sorted(places):
        try:
            fd = resolve(root_fd, place, os.O_PATH, follow=False, symlinks=False)
        except OSError:
            continue
        try:
            if os.fstatvfs(fd).f_flag & os.ST_RDONLY and m.is_mount_root(fd):
                m.set_attrs(fd, 0, m.MOUNT_ATTR_RDONLY, recursive=False)
        except OSError:
            pass
        finally:
            _close(fd)


def _chmod_back(root_fd: int, path: str, mode: int, made: tuple[int, int]) -> bool:
    """chmod ``path`` to ``mode`` if it is still the object ``made`` (st_dev, st_ino);
    True when done, or when it is no longer that object (then it is not ours)."""
    try:
        fd = resolve(root_fd, path, os.O_PATH, follow=False, symlinks=False)
    except OSError as exc:
        return exc.errno in (errno.ENOENT, errno.ELOOP)
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != made:
            return True
        if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
            # a real fd, not /proc/self/fd (the sandbox's /proc, or none, where an undo runs)
            real = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd) \
                if stat.S_ISDIR(st.st_mode) else \
                resolve(root_fd, path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY, follow=False, symlinks=False)
            try:
                again = os.fstat(real)
                if (again.st_dev, again.st_ino) != made:
                    return True
                os.fchmod(real, mode)
            finally:
                _close(real)
        else:   # (not through /proc/self/fd: where an undo runs, /proc is the sandbox's)
            m.fchmod_path_fd(fd, mode, through_proc=False)
        return True
    except OSError:
        return False
    finally:
        _close(fd)


def _refuse_link(fd: int, target: str) -> None:
    """Close ``fd`` and fail if it is a symlink (Builder._final)."""
    if not stat.S_ISLNK(os.fstat(fd).st_mode):
        return
    try:
        points_to = os.readlink("", dir_fd=fd)
    except OSError:
        points_to = "?"
    _close(fd)
    exc = OSError(errno.ELOOP, f"{target} is a symlink (to {points_to}); the entry does not write or "
                               "chmod through it")
    exc.hint = ("point the entry at where the link leads, or remove the link: in a bound directory "   # type: ignore[attr-defined]
                "the sandbox's process may have made it")
    raise exc


def remove_host_dirs(host_fd: int, paths: list[str], *, trees: frozenset[str] | None = None,
                     ids: dict[str, tuple[int, int]] | None = None) -> list[str]:
    """Remove the host directories ``paths`` (an overlay's upper and work and the parents
    made for them, oldest first) when empty; those in ``trees`` (a work directory, where
    the kernel makes work/work and work/index) when nothing but directories is in them
    (None: all of them so). No link is followed on the way; a path in ``ids`` only
    while it is the directory made (st_dev, st_ino). Returns those that stay for what
    is in them (an upper with what the environment wrote)."""
    kept = []
    for path in reversed(paths):
        parent, _, name = path.rpartition("/")
        try:
            pfd = resolve(host_fd, parent or "/", os.O_PATH | os.O_DIRECTORY, symlinks=False)
        except OSError:
            continue
        try:
            if ids is not None and path in ids:
                st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
                if (st.st_dev, st.st_ino) != ids[path]:
                    continue
            if trees is not None and path not in trees:
                os.rmdir(name, dir_fd=pfd)
            else:
                _rmdir_empty_tree(pfd, name)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                kept.append(path)
        finally:
            _close(pfd)
    return kept


def _rmdir_empty_tree(parent_fd: int, name: str) -> None:
    """Remove directory ``name`` and its subdirectories; never a file (then it stays)."""
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    try:
        for entry in os.scandir(fd):
            if entry.is_dir(follow_symlinks=False):
                _rmdir_empty_tree(fd, entry.name)
    finally:
        _close(fd)
    os.rmdir(name, dir_fd=parent_fd)


def _ovl_escape(path: str) -> str:
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def _isdir_fd(fd: int) -> bool:
    return stat.S_ISDIR(os.fstat(fd).st_mode)


def _stdin_tty() -> str | None:
    try:
        return os.ttyname(0) if os.isatty(0) else None
    except OSError:
        return None


# --- the entry point ------------------------------------------------------------------

def _describe(e: dict[str, Any]) -> str:
    src = e.get("source")
    if e.get("fd") is not None:
        src = f"fd {e['fd']}"
    return f"{e['type']} {src} -> {e['target']}" if src else f"{e['type']} {e['target']}"


def _msg(exc: BaseException) -> str:
    """vbdecl's own errors say what failed; a bare OSError (mkdir, symlink, open of one
    path component) says why, not Python's "[Errno 30] ...: 'component'"."""
    msg = getattr(exc, "message", None)
    if isinstance(msg, str):
        return msg
    if isinstance(exc, OSError) and exc.errno and exc.strerror:
        return f"{exc.strerror} ({errno.errorcode.get(exc.errno, exc.errno)})"
    return str(exc)


def _parent_is_dir(root_fd: int, target: str) -> bool:
    """Whether the parent of ``target`` is a directory in the root (True if there is no root)."""
    if root_fd < 0:
        return True
    try:
        fd = resolve(root_fd, target.rstrip("/").rpartition("/")[0] or "/",
                     os.O_PATH | os.O_DIRECTORY, missing_ok=True)
    except OSError:
        return False
    _close(fd)
    return fd >= 0


def _existing_destination(root_fd: int, target: str) -> str:
    """bubblewrap 0.11's words for a --symlink whose target exists (and differs)."""
    parent, _, name = target.rstrip("/").rpartition("/")
    try:
        fd = resolve(root_fd, parent or "/", os.O_PATH | os.O_DIRECTORY) if root_fd >= 0 else -1
    except OSError:
        fd = -1
    try:
        return f"existing destination is {os.readlink(name, dir_fd=fd)}" if fd >= 0 else "File exists"
    except OSError as err:
        if err.errno == errno.EINVAL:
            return "destination exists and is not a symlink"
        return f"destination exists, and cannot read symlink target: {err.strerror}"
    finally:
        _close(fd)


def _bwrap_message(e: dict[str, Any], exc: BaseException, root_fd: int = -1) -> str | None:
    """bubblewrap's words for a failed entry of ``vb`` (spec["vb"]), where it has its
    own; None: vbdecl's message stands. Manifests keep vbdecl's messages.

    bubblewrap makes the parents of every target but --chmod's first, and names
    that step when it fails: so does vb, when placing the entry in the root failed
    and the parent is not a directory now."""
    code = getattr(exc, "errno", None)
    if not isinstance(code, int):
        return None
    reason = os.strerror(code)
    kind = e["type"]
    if kind in ("file", "bind-data") and isinstance(exc, DataReadError):
        return f"Can't write data to file {e['target']}: {reason}"
    if kind == "chmod":
        return f"Can't chmod 0{int(e['mode']):o} {e['target']}: {reason}"
    if kind == "remount-ro" and code == errno.ENOENT:   # vb makes no parents for it
        return f"Can't remount readonly on /newroot{e['target']}: realpath(destination): {reason}"
    placing = getattr(exc, "placing", False)
    if placing and not _parent_is_dir(root_fd, e["target"]):
        return f"Can't mkdir parents for {e['target']}: {reason}"
    if kind == "file":
        return f"Can't create file {e['target']}: {reason}"
    if placing and code == errno.ENOTDIR and kind not in ("symlink", "remount-ro") and not getattr(
            exc, "making_file", False):
        return f"Can't mkdir {e['target']}: {reason}"   # a directory mount point, or dir
    if isinstance(exc, SysError):
        return None         # a mount call: vbdecl's words name it
    if kind == "symlink":
        if code == errno.EEXIST:
            return f"Can't make symlink at {e['target']}: {_existing_destination(root_fd, e['target'])}"
        return f"Can't make symlink at {e['target']}: {reason}"
    if getattr(exc, "making_file", False):
        return f"Can't create file at {e['target']}: {reason}"    # a file mount point
    if code in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC):
        return f"Can't mkdir {e['target']}: {reason}"    # a directory mount point, or dir
    return None


def entry_hint(exc: BaseException, e: dict[str, Any], *, vb: bool = False) -> str | None:
    """What to do about ``exc`` from the filesystem entry ``e`` (a run's and an apply's)."""
    code = getattr(exc, "errno", None)
    if code == errno.ENOENT and e.get("source"):
        return _missing_source_hint(e, vb)
    if code == errno.ENOENT and e["type"] in ("overlay", "tmp-overlay", "ro-overlay"):
        return "every overlay lower directory must exist on the host"
    if e["type"] == "chmod" and code == errno.EROFS:
        return ("the target is on a read-only mount (ro-bind, ro-overlay, remount-ro): change its "
                "mode before that entry, or in its source")
    if e["type"] == "chmod" and code == errno.EPERM:
        return ("only the file's owner may change its mode (or CAP_FOWNER over it): in a user "
                "namespace, that owner must be mapped (" + ("--unshare-user maps only the caller"
                                                          if vb else "idmap") + ")")
    if code == errno.EROFS:
        return "the target's parent is read-only: create the mount point earlier, or mount a tmpfs first"
    if code == errno.ENOTDIR:
        return ("the target (for a directory mount) or a component of its path is not a directory, "
                "or is a symlink that does not resolve to one inside the root")
    if code == errno.EISDIR:
        return "the target exists with another type (file vs directory) than the source"
    if code == errno.EINVAL and e["type"] in ("overlay", "tmp-overlay", "ro-overlay"):
        return ("overlayfs refused these layers: the upper and work directories must be on the "
                "same filesystem, the work directory empty and neither inside the other, no "
                "layer inside another (the upper inside a lower, say), and every layer on a "
                "filesystem overlayfs can use; the kernel log (dmesg) names the reason")
    if code == errno.EPERM and e["type"] == "proc":
        if vb:
            return ("mounting proc needs the sandbox's own pid namespace (--unshare-pid), "
                    "and no fully covered /proc on the host when in a user namespace")
        return ("mounting proc needs the environment's own pid namespace (namespaces.pid: true), "
                "and no fully covered /proc on the host when in a user namespace")
    if code == errno.EPERM and e["type"] == "mqueue":
        if vb:
            return "mounting mqueue needs the sandbox's own ipc namespace: add --unshare-ipc"
        return "mounting mqueue needs the environment's own ipc namespace (namespaces.ipc: true)"
    if code == errno.EPERM:
        return "the kernel refused: this needs CAP_SYS_ADMIN in the environment's user namespace"
    return getattr(exc, "hint", None)


def _mapped_access_hint(spec: dict[str, Any], e: dict[str, Any], exc: OSError) -> str | None:
    """For a host source the setup may not read: the setup runs as root of the
    sandbox's user namespace, which is the host uid ``spec.idmap`` maps 0 to (a user's
    review: a 0700 home, with 0 mapped to a subordinate uid, read as "check whether
    you run as root")."""
    maps = (spec.get("idmap") or {}).get("uid") or []
    outside = next((m["outside"] for m in maps if m["inside"] == 0), None)
    if not e.get("source") or outside is None or outside == _CALLER_UID:
        return None
    if e["source"] not in (getattr(exc, "filename", None) or "") + _msg(exc):
        return None     # (the source opened; something else was refused: a target, say)
    return (f"the setup opens host sources as host uid {outside} (root inside: spec.idmap maps "
            f"uid 0 to it), not as you: that uid must be able to reach {e['source']} (every "
            "directory on the way too), or map uid 0 to your own uid")


def _missing_source_hint(e: dict[str, Any], vb: bool) -> str:
    """What to do about a missing host source: only keys (or vb options) the
    entry's type accepts (``optional`` exists on the bind types only)."""
    text = f"the source {e['source']} does not exist on the host; create it"
    kind = e["type"]
    if kind in ("bind", "ro-bind", "dev-bind"):
        return text + (f", or use --{kind}-try to skip it when missing" if vb
                       else ", or set optional: true to skip it when missing")
    if kind == "file" and not vb:
        return text + ", or give the file's text inline with content: instead of source:"
    return text


def _pick_base() -> str:
    for base in STAGING_BASES:
        if os.path.isdir(base) and not os.path.islink(base):
            return base
    raise RuntimeSetupError("no directory to stage the new root in",
                            hint=f"one of {', '.join(STAGING_BASES)} must exist in the host root")


def setup_root(spec: dict[str, Any], *, contained: bool = False,
               report: Callable[[dict[str, Any]], None] | None = None,
               faults: frozenset[str] = frozenset()) -> None:
    """Build the environment's root from ``spec`` and make it ``/`` (see the module doc).

    ``contained``: the caller made this mount namespace's mounts private or slaves
    already (sysns.contain_mounts, in a namespace it created); else (a joined one)
    they are made slaves here, so that nothing mounted reaches where they came from.
    ``report`` (a run): called with what the build changed of the host as it goes
    (see _ChangeReports), so that what is made is undone even if the build is cut
    short; a build that fails undoes it itself. ``faults`` (``VBDECL_FAULT``, a test
    hook): the ids of the actions whose step fails, as a real failure there would.

    Raises :class:`RuntimeSetupError` (``where`` = the action id) on failure;
    the mount namespace is then unusable and the caller should exit.
    """
    old_umask = os.umask(0)
    try:
        _setup_root(spec, contained, report, faults)
    finally:
        os.umask(old_umask)


def clone_rootfs(src: int) -> int:
    """A detached copy of the ``rootfs`` directory's mount tree at ``src``, nodev as every
    bind but ``dev-bind``: root inside could otherwise mknod the host's disk there and
    open it (a security review wrote to the host's /dev/kmsg so). Setuid stays: a
    rootfs is a system whose ping or su may need it once no_new_privs is off."""
    clone = m.clone_tree(src, recursive=True)
    try:
        m.set_attrs(clone, m.MOUNT_ATTR_NODEV, recursive=True)
    except BaseException:
        _close(clone)
        raise
    return clone


def _injected(action: str) -> RuntimeSetupError:
    return RuntimeSetupError("injected fault (VBDECL_FAULT)", where=action,
                             hint="unset VBDECL_FAULT; it is a test hook")


def _setup_root(spec: dict[str, Any], contained: bool,
                report: Callable[[dict[str, Any]], None] | None, faults: frozenset[str]) -> None:
    if "rootfs" in faults:
        raise _injected("rootfs")
    try:
        try:
            if not contained:
                m.mount(None, "/", None, m.MS_REC | m.MS_SLAVE)
        except SysError as exc:
            # EINVAL: the process root is not a mount point (chrooted); the
            # fallback below copes, and nothing we mount is shared anyway.
            if exc.errno != errno.EINVAL:
                raise
        userns = not in_initial_user_ns()   # while /proc is still where it was
        tty = _stdin_tty()
        # What the sandbox may write, known by inode from the host's root now (the same
        # objects the build reaches later); vb follows links there, as bubblewrap
        writable = sandbox_writable(spec) if "vb" not in spec else []
        rootfs = spec.get("rootfs")
        rootfs_clone = src = -1
        fence: Fence = frozenset()
        if writable or rootfs is not None:
            host = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                fence = fence_of(host, writable)
                if rootfs is not None:     # (before the staging tmpfs may cover it: under /tmp)
                    src = resolve(host, rootfs, os.O_PATH | os.O_DIRECTORY, fence=fence)
            finally:
                _close(host)
        if rootfs is not None:
            try:
                rootfs_clone = clone_rootfs(src)
            finally:
                _close(src)
        base = _pick_base()
        # (modes by chmod, not mount options: /proc/self/mountinfo then shows the
        # superblocks as bubblewrap's, "rw", where a file of --bind-data lives and on a
        # remounted root; nothing but this process sees them before the chmod)
        m.mount("tmpfs", base, "tmpfs", m.MS_NOSUID | m.MS_NODEV, None)
        os.chmod(base, 0o700)
        os.chdir(base)
        os.mkdir("newroot", 0o755)
        os.mkdir("oldroot", 0o755)
        os.mkdir("stage", 0o700)
        if rootfs is None:
            m.mount("tmpfs", "newroot", "tmpfs", m.MS_NOSUID | m.MS_NODEV, None)
            os.chmod("newroot", 0o755)
        else:
            tfd = os.open("newroot", os.O_PATH | os.O_CLOEXEC)
            try:
                m.attach(rootfs_clone, tfd)
            finally:
                _close(tfd)
                _close(rootfs_clone)
        try:
            m.pivot_root(".", "oldroot")
            pivoted = True
            os.chdir("/")
            host_fd = os.open("/oldroot", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            root_path, stage_path, prefix = "/newroot", "/stage", "/oldroot"
        except SysError as exc:
            if exc.errno != errno.EINVAL:
                raise
            # The process root is not a mount point (e.g. chrooted): build in place.
            pivoted = False
            host_fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            root_path, stage_path, prefix = f"{base}/newroot", f"{base}/stage", "/"
    except OSError as exc:
        raise RuntimeSetupError(f"cannot prepare the new root: {_msg(exc)}", where="rootfs",
                                hint=getattr(exc, "hint", None) or
                                "the sandbox child must be in its own mount namespace with "
                                "CAP_SYS_ADMIN") from exc
    staging_fd = os.open(stage_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    b = Builder(host_fd, root_path, staging_fd, prefix, userns, tty)
    b.through_links = "vb" in spec
    b.fence = fence
    # (the host's root only: in a user namespace we hold no more than the caller)
    set_link_policy("vb" not in spec and os.geteuid() == 0 and not userns)
    ok = False
    reports = None
    if report is not None:
        b.track_host = True
        if rootfs is None:
            b.fresh_devs.add(os.fstat(b.root_fd).st_dev)
        reports = _ChangeReports(b, report, root_path)
    try:
        entries = list(spec.get("filesystem") or [])
        for index, (aid, e) in enumerate(zip(fs_action_ids(entries), entries, strict=True)):
            try:
                if aid in faults:
                    raise _injected(aid)
                b.apply(e)
                if reports is not None:
                    reports.send()
                    _test_crash_point(index)
            except OSError as exc:
                bwrap = _bwrap_message(e, exc, b.root_fd) if "vb" in spec else None
                if bwrap is not None:
                    raise RuntimeSetupError(bwrap, hint=entry_hint(exc, e, vb=True)) from exc
                hint = _mapped_access_hint(spec, e, exc) if exc.errno == errno.EACCES else None
                raise RuntimeSetupError(f"{_describe(e)}: {_msg(exc)}", where=aid,
                                        hint=hint or entry_hint(exc, e, vb="vb" in spec)) from exc
        net = spec.get("network") or {}
        if "net.dns" in faults:
            raise _injected("net.dns")
        try:
            if (spec.get("vb") or {}).get("net_files", True) is not False:
                b.net_files({"dns": net.get("dns"), "hosts": net.get("hosts"),
                             "hostname": spec.get("hostname")})
        except OSError as exc:
            raise RuntimeSetupError(f"network files: {_msg(exc)}", where="net.dns",
                                    hint=getattr(exc, "hint", None)) from exc
        ok = True
    finally:
        set_link_policy(False)      # (a shared child's module is vbdecl's own)
        if reports is not None:
            changes = b.host_changes()
            if changes is not None and not ok:
                undo_host_changes(b.root_fd, changes, root_path)    # a failed build undoes its own
                reports.undone()
            elif ok:
                reports.send()      # (net_files)
        b.close()
        _close(staging_fd)
        if not ok:
            # Detach what was built (it holds overlay work dirs), then remove the
            # host directories this setup created.
            try:
                m.umount2(root_path, m.MNT_DETACH)
            except OSError:
                pass
            b.rollback_host()
        _close(host_fd)
    try:
        _enter(pivoted, base, root_path)
    except OSError as exc:
        raise RuntimeSetupError(f"cannot switch to the new root: {_msg(exc)}", where="rootfs",
                                hint=getattr(exc, "hint", None)) from exc
    if reports is not None:
        reports.entered()


class _ChangeReports:
    """What the build changed of the host (Builder.host_changes), told after each entry
    as far as it is new (the janitor adds the reports up), with where the root is
    from the mount namespace's own root: a build cut short (vbdecl killed, and the
    sandbox with it) leaves its root at root_path, one that got through at /."""

    def __init__(self, builder: Builder, report: Callable[[dict[str, Any]], None], root_path: str) -> None:
        self.builder = builder
        self.report = report
        self.root = root_path
        self.paths: set[str] = set()
        self.own_files: set[str] = set()
        self.modes: set[tuple[str, int, int, int]] = set()

    def send(self) -> None:
        changes = self.builder.host_changes()
        if changes is None:
            return
        paths = [p for p in changes["paths"] if p not in self.paths]
        own = [p for p in changes["own_files"] if p not in self.own_files]
        modes = [change for change in changes["modes"] if change not in self.modes]
        if not paths and not own and not modes:
            return
        self.report({"root": self.root, "paths": paths, "own_files": own, "modes": modes,
                     "ids": {p: changes["ids"][p] for p in paths}})
        self.paths.update(paths)
        self.own_files.update(own)
        self.modes.update(modes)

    def undone(self) -> None:
        """The build failed and undid what it changed: nothing is left to undo."""
        self.report({"undone": True})

    def entered(self) -> None:
        if self.paths or self.modes:
            self.report({"root": "/"})


def sandbox_writable(spec: dict[str, Any]) -> list[str]:
    """The host directories (and files) a sandbox of ``spec`` may write: the sources
    of its rw binds, the upper and work directories of its rw overlays, its rootfs.
    Outermost first."""
    found = []
    for e in spec.get("filesystem") or []:
        if e.get("type") in ("bind", "dev-bind") and e.get("source") and e.get("fd") is None:
            found.append(e["source"])
        elif e.get("type") == "overlay" and e.get("upper"):
            found += [e["upper"], e.get("work") or ""]
    if spec.get("rootfs"):
        found.append(spec["rootfs"])
    return sorted({os.path.normpath(p) for p in found if p and p.startswith("/")}, key=len)


def open_status_file(path: str, flags: int, beside: list[str]) -> int:
    """Open the host file ``path`` (``status.lock_file``, ``status.events``) for
    vbdecl, creating it 0644: not through a symlink at its own name, nor through one
    on the way below a host directory of ``beside`` (sandbox_writable: the sandbox
    there may have replaced a directory on the way with a link to where it wants
    vbdecl to write)."""
    host = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return resolve(host, path, flags | os.O_CLOEXEC, follow=False, mode=0o644,
                       fence=fence_of(host, beside))
    except OSError as exc:
        if hasattr(exc, "fenced") or not exc.errno:
            raise
        raise OSError(exc.errno, os.strerror(exc.errno), path) from None   # (no openat2 hint)
    finally:
        _close(host)


def merge_change_reports(reports: list[dict[str, Any]]) -> tuple[str, dict[str, Any] | None]:
    """The root and what to undo (undo_host_changes) from _ChangeReports' reports."""
    root = "/"
    total: dict[str, Any] = {"paths": [], "ids": {}, "own_files": [], "modes": []}
    for report in reports:
        if report.get("undone"):
            total = {"paths": [], "ids": {}, "own_files": [], "modes": []}
        root = str(report.get("root") or root)
        total["paths"] += [p for p in report.get("paths") or [] if p not in total["ids"]]
        total["ids"].update(report.get("ids") or {})
        total["own_files"] += report.get("own_files") or []
        total["modes"] += report.get("modes") or []
    return root, total if total["paths"] or total["modes"] else None


def _test_crash_point(index: int) -> None:
    """``VBDECL_TEST_CRASH_AT=root-entry:N`` (vbdecl/engine/faults.py): once entry N
    is built, SIGKILL every process of the run's process group and leave, as if
    killed too (a pid 1 is immune to its own signals): a test hook, inert unless set.
    Start the run in a session of its own: the caller's group is the run's otherwise."""
    if os.getenv("VBDECL_TEST_CRASH_AT") == f"root-entry:{index}":
        from vbdecl.sys.signals import SIGKILL

        os.killpg(0, SIGKILL)
        os._exit(128 + SIGKILL)


def _enter(pivoted: bool, base: str, root_path: str) -> None:
    if pivoted:
        # The host tree must be private before it is detached, or the unmount
        # would propagate; then /newroot becomes / and the staging tmpfs goes,
        # the host tree under it with it: one detach, where a detach of each
        # would wait for two RCU grace periods.
        m.mount("oldroot", "/oldroot", None, m.MS_REC | m.MS_PRIVATE)
        stage_root = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.chdir("/newroot")
            m.pivot_root(".", ".")
            # In the new root, whose files (a rootfs image's) may hold a module where
            # we would look for one, nothing more is imported, whatever happens next
            # (what the rest needs is, by child.preload).
            seal_imports()
            os.fchdir(stage_root)
        finally:
            _close(stage_root)
        m.umount2(".", m.MNT_DETACH)
        os.chdir("/")
    else:
        os.chdir(root_path)
        m.mount(root_path, "/", None, m.MS_MOVE)
        m.umount2(base, m.MNT_DETACH)
        os.chroot(".")
        seal_imports()      # (as above)
        os.chdir("/")


def _sha256_hex(data: bytes) -> str:
    from vbdecl.hashing import sha256  # (only plans of apply pin a source: not run's path)

    return str(sha256(data).hexdigest())

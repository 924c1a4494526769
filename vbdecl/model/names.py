"""Plain data the model, the planner and the security ops share. No pydantic.

- :data:`CAPABILITIES`: capability name (upper case, without ``CAP_``) -> number.
- :data:`SYSCALLS`: every syscall name valid on x86_64 or aarch64. Taken
  once from the kernel UAPI headers of Debian 12 (asm/unistd_64.h and
  asm-generic/unistd.h, cross-checked against libseccomp's resolver), plus
  the calls added by Linux 6.6 to 6.15.
- :data:`SYSCALL_GROUPS`: systemd-style ``@groups`` usable in
  ``security.seccomp.allow``/``deny`` and by the seccomp profile builder.
- :func:`ifname_problem`: why a name cannot be a network interface's (or a
  bridge's), for the model, the network ops and vb alike.
"""

from __future__ import annotations

import errno as _errno

CAPABILITIES: dict[str, int] = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4,
    "KILL": 5, "SETGID": 6, "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9,
    "NET_BIND_SERVICE": 10, "NET_BROADCAST": 11, "NET_ADMIN": 12, "NET_RAW": 13,
    "IPC_LOCK": 14, "IPC_OWNER": 15, "SYS_MODULE": 16, "SYS_RAWIO": 17, "SYS_CHROOT": 18,
    "SYS_PTRACE": 19, "SYS_PACCT": 20, "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23,
    "SYS_RESOURCE": 24, "SYS_TIME": 25, "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28,
    "AUDIT_WRITE": 29, "AUDIT_CONTROL": 30, "SETFCAP": 31, "MAC_OVERRIDE": 32,
    "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35, "BLOCK_SUSPEND": 36, "AUDIT_READ": 37,
    "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}
CAP_LAST = max(CAPABILITIES.values())

# The documented default when `security.capabilities` is absent: what a
# container runtime (Docker/OCI default) keeps; everything else is dropped.
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "NET_BIND_SERVICE", "SYS_CHROOT", "MKNOD", "AUDIT_WRITE", "SETFCAP",
)

_SYSCALL_TEXT = """
_sysctl accept accept4 access acct add_key adjtimex afs_syscall alarm arch_prctl
arch_specific_syscall bind bpf brk cachestat capget capset chdir chmod chown chroot
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64
clock_nanosleep clock_nanosleep_time64 clock_settime clock_settime64 clone clone3 close
close_range connect copy_file_range creat create_module delete_module dup dup2 dup3 epoll_create
epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd
eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate
fanotify_init fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchownat fcntl fcntl64
fdatasync fgetxattr finit_module flistxattr flock fork fremovexattr fsconfig fsetxattr fsmount
fsopen fspick fstat fstat64 fstatat fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64
futex futex_requeue futex_time64 futex_wait futex_waitv futex_wake futimesat get_kernel_syms
get_mempolicy get_robust_list get_thread_area getcpu getcwd getdents getdents64 getegid geteuid
getgid getgroups getitimer getpeername getpgid getpgrp getpid getpmsg getppid getpriority
getrandom getresgid getresuid getrlimit getrusage getsid getsockname getsockopt gettid
gettimeofday getuid getxattr getxattrat init_module inotify_add_watch inotify_init inotify_init1
inotify_rm_watch io_cancel io_destroy io_getevents io_pgetevents io_pgetevents_time64 io_setup
io_submit io_uring_enter io_uring_register io_uring_setup ioctl ioperm iopl ioprio_get
ioprio_set kcmp kexec_file_load kexec_load keyctl kill landlock_add_rule landlock_create_ruleset
landlock_restrict_self lchown lgetxattr link linkat listen listmount listxattr listxattrat
llistxattr llseek lookup_dcookie lremovexattr lseek lsetxattr lsm_get_self_attr lsm_list_modules
lsm_set_self_attr lstat lstat64 madvise map_shadow_stack mbind membarrier memfd_create
memfd_secret migrate_pages mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap mmap2
modify_ldt mount mount_setattr move_mount move_pages mprotect mq_getsetattr mq_notify mq_open
mq_timedreceive mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink mremap mseal
msgctl msgget msgrcv msgsnd msync munlock munlockall munmap name_to_handle_at nanosleep
newfstatat nfsservctl open open_by_handle_at open_tree open_tree_attr openat openat2 pause
perf_event_open personality pidfd_getfd pidfd_open pidfd_send_signal pipe pipe2 pivot_root
pkey_alloc pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv preadv2
prlimit64 process_madvise process_mrelease process_vm_readv process_vm_writev pselect6
pselect6_time64 ptrace putpmsg pwrite64 pwritev pwritev2 query_module quotactl quotactl_fd read
readahead readlink readlinkat readv reboot recvfrom recvmmsg recvmmsg_time64 recvmsg
remap_file_pages removexattr removexattrat rename renameat renameat2 request_key restart_syscall
rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend
rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_get_priority_max
sched_get_priority_min sched_getaffinity sched_getattr sched_getparam sched_getscheduler
sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity sched_setattr
sched_setparam sched_setscheduler sched_yield seccomp security select semctl semget semop
semtimedop semtimedop_time64 sendfile sendfile64 sendmmsg sendmsg sendto set_mempolicy
set_mempolicy_home_node set_robust_list set_thread_area set_tid_address setdomainname setfsgid
setfsuid setgid setgroups sethostname setitimer setns setpgid setpriority setregid setresgid
setresuid setreuid setrlimit setsid setsockopt settimeofday setuid setxattr setxattrat shmat
shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 socket socketpair splice stat stat64
statfs statfs64 statmount statx swapoff swapon symlink symlinkat sync sync_file_range
sync_file_range2 syncfs sysfs sysinfo syslog tee tgkill time timer_create timer_delete
timer_getoverrun timer_gettime timer_gettime64 timer_settime timer_settime64 timerfd_create
timerfd_gettime timerfd_gettime64 timerfd_settime timerfd_settime64 times tkill truncate
truncate64 tuxcall umask umount2 uname unlink unlinkat unshare uselib userfaultfd ustat utime
utimensat utimensat_time64 utimes vfork vhangup vmsplice vserver wait4 waitid write writev
"""
SYSCALLS: frozenset[str] = frozenset(_SYSCALL_TEXT.split())

# systemd-style groups (see systemd.exec(5), SystemCallFilter=). Names not
# known on an architecture are skipped by the profile builder.
SYSCALL_GROUPS: dict[str, tuple[str, ...]] = {
    "@clock": ("adjtimex", "clock_adjtime", "clock_settime", "settimeofday", "stime"),
    "@cpu-emulation": ("modify_ldt", "subpage_prot", "switch_endian", "vm86", "vm86old"),
    "@debug": ("lookup_dcookie", "perf_event_open", "pidfd_getfd", "ptrace", "rtas",
               "s390_runtime_instr", "sys_debug_setcontext", "process_vm_readv",
               "process_vm_writev", "kcmp"),
    "@keyring": ("add_key", "keyctl", "request_key"),
    "@module": ("delete_module", "finit_module", "init_module", "create_module"),
    "@mount": ("chroot", "fsconfig", "fsmount", "fsopen", "fspick", "mount", "mount_setattr",
               "move_mount", "open_tree", "open_tree_attr", "pivot_root", "umount", "umount2"),
    "@obsolete": ("_sysctl", "afs_syscall", "bdflush", "break", "create_module", "ftime",
                  "get_kernel_syms", "getpmsg", "gtty", "idle", "lock", "mpx", "prof",
                  "profil", "putpmsg", "query_module", "security", "sgetmask", "ssetmask",
                  "stty", "sysfs", "tuxcall", "ulimit", "uselib", "ustat", "vserver"),
    "@raw-io": ("ioperm", "iopl", "pciconfig_iobase", "pciconfig_read", "pciconfig_write",
                "s390_mmio_read", "s390_mmio_write"),
    "@reboot": ("kexec_file_load", "kexec_load", "reboot"),
    "@swap": ("swapoff", "swapon"),
    "@resources": ("ioprio_set", "mbind", "migrate_pages", "move_pages", "nice",
                   "sched_setaffinity", "sched_setattr", "sched_setparam", "sched_setscheduler",
                   "set_mempolicy", "set_mempolicy_home_node", "setpriority", "setrlimit",
                   "prlimit64"),
    "@privileged": ("acct", "bpf", "capset", "chroot", "fanotify_init", "mount_setattr",
                    "nfsservctl", "open_by_handle_at", "pivot_root", "quotactl",
                    "quotactl_fd", "setdomainname", "setfsuid", "setfsgid", "setgroups",
                    "sethostname", "setresuid", "setresgid", "setreuid", "setregid",
                    "setuid", "setgid", "vhangup"),
    "@namespaces": ("setns", "unshare", "clone3"),
}
# The groups a default profile denies.
DEFAULT_DENY_GROUPS: tuple[str, ...] = (
    "@clock", "@cpu-emulation", "@debug", "@keyring", "@module", "@mount", "@obsolete",
    "@raw-io", "@reboot", "@swap",
)

ERRNOS: frozenset[str] = frozenset(_errno.errorcode.values())

RLIMITS: tuple[str, ...] = (
    "as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile",
    "nproc", "rss", "rtprio", "rttime", "sigpending", "stack",
)
RLIM_INFINITY = -1  # resource.RLIM_INFINITY: "unlimited" in a manifest
# The largest finite rlimit: rlim_t is unsigned 64-bit, but Python's resource module and
# JSON readers take signed 64-bit integers; a limit that high is "unlimited" in practice.
RLIM_MAX = 2**63 - 1
# The kernel's PID_MAX_LIMIT on 64-bit: pids.max refuses anything above it.
PID_MAX_LIMIT = 4 * 1024 * 1024
# What limits.pids must allow for `vbdecl run` and vb: the sandbox's pid 1 and the
# process both count (below it the process's fork fails with EAGAIN). A live
# environment needs more (cli/cmd_plan.LIVE_PIDS_FLOOR).
RUN_PIDS_FLOOR = 2

NAMESPACES: tuple[str, ...] = ("user", "pid", "mount", "uts", "ipc", "net", "cgroup")

FS_TYPES: tuple[str, ...] = (
    "bind", "ro-bind", "dev-bind", "proc", "dev", "mqueue", "tmpfs", "dir", "file",
    "bind-data", "symlink", "chmod", "remount-ro", "overlay", "tmp-overlay", "ro-overlay",
)


def expand_syscalls(names: list[str] | tuple[str, ...]) -> list[str]:
    """Names with ``@groups`` expanded, in order, without duplicates."""
    out: list[str] = []
    seen: set[str] = set()
    for name in names:
        for n in SYSCALL_GROUPS.get(name, (name,)):
            if n not in seen:
                seen.add(n)
                out.append(n)
    return out


IFNAMSIZ = 16   # the kernel's limit on an interface name, with its NUL


def ifname_problem(name: str, what: str = "interface") -> tuple[str, str] | None:
    """(message, hint) saying why ``name`` cannot name a network interface, or None.
    ``what`` "bridge": also refuses '@', which vbdecl's address claims use
    ("BRIDGE@ADDRESS" alternative names of a veth share the interface names'
    namespace, so a bridge named like a claim could take one away)."""
    if not name or len(name) >= IFNAMSIZ:
        return (f"{what} name {name!r} is {len(name)} characters long; the kernel allows 1 to 15",
                "choose a shorter name")
    if name in (".", "..") or "/" in name or ":" in name or any(c.isspace() or c == "\0" for c in name):
        return (f"invalid {what} name {name!r}: it cannot contain '/', ':' or whitespace, or be '.' or '..'",
                "use letters, digits, '-', '_' and '.'")
    if what == "bridge" and "@" in name:
        return (f"invalid bridge name {name!r}: '@' is reserved for vbdecl's address claims",
                "use letters, digits, '-', '_' and '.'")
    return None

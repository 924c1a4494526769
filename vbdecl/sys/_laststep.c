/*
 * The process's last steps, from a prepared plan to execve, compiled.
 *
 * vbdecl.sys.laststep describes the steps (a LastStep object: plain ints,
 * bytes and lists); last_step() copies it into C memory, then runs the steps
 * either in place (the caller becomes the payload) or in a child made with
 * vfork, as _posixsubprocess starts a program. A forked Python process takes a
 * copy-on-write fault for every page it touches, and its interpreter touches
 * many; the vfork child runs only this file's code, on the caller's stack and
 * memory, until execve. The caller (pid 1, which just built the root) waits
 * those few microseconds.
 *
 * No Python API, no allocation and no locks between vfork and execve: only
 * system calls and the arrays prepared before. A failure records which step
 * failed, an index (the fd, limit, capability, program or path) and errno, and
 * the child exits; Python turns that into the message (vbdecl.runtime.child).
 *
 * The order of the steps, and why it is so, is vbdecl.ops.sec's (security)
 * and vbdecl.runtime.child's (the process) to explain.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "_laststep.h"

#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef SYS_landlock_restrict_self
#define SYS_landlock_restrict_self 446
#endif
/* 32-bit ids on every architecture */
#ifdef SYS_setresuid32
#define NR_SETRESUID SYS_setresuid32
#define NR_SETRESGID SYS_setresgid32
#define NR_SETGROUPS SYS_setgroups32
#else
#define NR_SETRESUID SYS_setresuid
#define NR_SETRESGID SYS_setresgid
#define NR_SETGROUPS SYS_setgroups
#endif
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_RAISE 2
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

#define STEP_NAME(name) #name,
const char *const last_step_names[] = {LAST_STEPS(STEP_NAME) NULL};

/* --- reading the plan (before anything changes; may allocate) --------------- */

static PyObject *
attr(PyObject *obj, const char *name)
{
    return PyObject_GetAttrString(obj, name);
}

static int
get_long(PyObject *obj, const char *name, long *out)
{
    PyObject *v = attr(obj, name);
    if (v == NULL)
        return -1;
    *out = PyLong_AsLong(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int
get_u64(PyObject *obj, const char *name, uint64_t *out)
{
    PyObject *v = attr(obj, name);
    if (v == NULL)
        return -1;
    unsigned long long u = PyLong_AsUnsignedLongLong(v);
    Py_DECREF(v);
    if (u == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *out = u;
    return 0;
}

static int
get_int(PyObject *obj, const char *name, int *out)
{
    long v;
    if (get_long(obj, name, &v) < 0)
        return -1;
    *out = (int)v;
    return 0;
}

/* A list of ints as a C array (PyMem); None: *n = -1. */
static int
get_ints(PyObject *obj, const char *name, int **out, Py_ssize_t *n)
{
    PyObject *v = attr(obj, name);
    if (v == NULL)
        return -1;
    if (v == Py_None) {     /* the step is skipped */
        Py_DECREF(v);
        *n = -1;
        return 0;
    }
    PyObject *seq = PySequence_Fast(v, name);
    Py_DECREF(v);
    if (seq == NULL)
        return -1;
    *n = PySequence_Fast_GET_SIZE(seq);
    *out = PyMem_Calloc((size_t)*n + 1, sizeof(int));
    if (*out == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        long x = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (x == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        (*out)[i] = (int)x;
    }
    Py_DECREF(seq);
    return 0;
}

/* A list of bytes as a NULL-terminated array of pointers into them; the bytes
 * objects stay alive in *keep (a new reference to the list's copy). */
static int
get_strings(PyObject *obj, const char *name, char ***out, Py_ssize_t *n, PyObject *alive)
{
    PyObject *v = attr(obj, name);
    if (v == NULL)
        return -1;
    PyObject *seq = PySequence_Fast(v, name);
    Py_DECREF(v);
    if (seq == NULL)
        return -1;
    if (PyList_Append(alive, seq) < 0) {
        Py_DECREF(seq);
        return -1;
    }
    Py_DECREF(seq);
    *n = PySequence_Fast_GET_SIZE(seq);
    *out = PyMem_Calloc((size_t)*n + 1, sizeof(char *));
    if (*out == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyBytes_Check(item)) {
            PyErr_Format(PyExc_TypeError, "LastStep.%s must hold bytes", name);
            PyMem_Free(*out);
            *out = NULL;
            return -1;
        }
        (*out)[i] = PyBytes_AS_STRING(item);
    }
    return 0;
}

static int
get_rlimits(PyObject *obj, struct plan *p)
{
    PyObject *v = attr(obj, "rlimits");
    if (v == NULL)
        return -1;
    PyObject *seq = PySequence_Fast(v, "rlimits");
    Py_DECREF(v);
    if (seq == NULL)
        return -1;
    p->n_rlimits = PySequence_Fast_GET_SIZE(seq);
    p->rlimits = PyMem_Calloc((size_t)p->n_rlimits + 1, sizeof(struct limit));
    if (p->rlimits == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < p->n_rlimits; i++) {
        int resource;
        unsigned long long soft, hard;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "iKK", &resource, &soft, &hard)) {
            Py_DECREF(seq);
            return -1;
        }
        p->rlimits[i].resource = resource;
        p->rlimits[i].value.rlim_cur = (rlim_t)soft;
        p->rlimits[i].value.rlim_max = (rlim_t)hard;
    }
    Py_DECREF(seq);
    return 0;
}

static int
get_seccomp(PyObject *obj, struct plan *p, PyObject *alive)
{
    char **progs;
    if (get_strings(obj, "seccomp", &progs, &p->n_seccomp, alive) < 0)
        return -1;
    p->seccomp = PyMem_Calloc((size_t)p->n_seccomp + 1, sizeof(struct sock_fprog));
    if (p->seccomp == NULL) {
        PyMem_Free(progs);
        PyErr_NoMemory();
        return -1;
    }
    PyObject *seq = PyList_GET_ITEM(alive, PyList_GET_SIZE(alive) - 1);
    for (Py_ssize_t i = 0; i < p->n_seccomp; i++) {
        Py_ssize_t size = PyBytes_GET_SIZE(PySequence_Fast_GET_ITEM(seq, i));
        if (size == 0 || size % (Py_ssize_t)sizeof(struct sock_filter) != 0 ||
            size / (Py_ssize_t)sizeof(struct sock_filter) > BPF_MAXINSNS) {
            PyMem_Free(progs);
            PyErr_SetString(PyExc_ValueError, "a seccomp program is 1 to 4096 instructions of 8 bytes");
            return -1;
        }
        p->seccomp[i].len = (unsigned short)(size / (Py_ssize_t)sizeof(struct sock_filter));
        p->seccomp[i].filter = (struct sock_filter *)progs[i];
    }
    PyMem_Free(progs);
    return 0;
}

int
last_step_read(PyObject *obj, struct plan *p, PyObject *alive)
{
    Py_ssize_t n_envp, n_argv, longest = 0;
    if (get_ints(obj, "reset_signals", &p->reset_signals, &p->n_reset_signals) < 0 ||
        get_int(obj, "new_session", &p->new_session) < 0 ||
        get_long(obj, "death_parent", &p->death_parent) < 0 ||
        get_int(obj, "death_watch", &p->death_watch) < 0 ||
        get_strings(obj, "cwds", &p->cwds, &p->n_cwds, alive) < 0 ||
        get_strings(obj, "envp", &p->envp, &n_envp, alive) < 0 ||
        get_long(obj, "pwd_slot", &p->pwd_slot) < 0 ||
        get_rlimits(obj, p) < 0 ||
        get_ints(obj, "inherit", &p->inherit, &p->n_inherit) < 0 ||
        get_ints(obj, "keep", &p->keep, &p->n_keep) < 0 ||
        get_ints(obj, "close_std", &p->close_std, &p->n_close_std) < 0 ||
        get_int(obj, "userns2", &p->userns2) < 0 ||
        get_int(obj, "block", &p->block) < 0 ||
        get_int(obj, "shell_fallback", &p->shell_fallback) < 0 ||
        get_int(obj, "security", &p->security) < 0 ||
        get_int(obj, "assert_userns_disabled", &p->assert_userns_disabled) < 0 ||
        get_u64(obj, "hold", &p->hold) < 0 ||
        get_u64(obj, "kept", &p->kept) < 0 ||
        get_u64(obj, "inheritable", &p->inheritable) < 0 ||
        get_u64(obj, "ambient", &p->ambient) < 0 ||
        get_long(obj, "uid", &p->uid) < 0 ||
        get_long(obj, "gid", &p->gid) < 0 ||
        get_ints(obj, "drop", &p->drop, &p->n_drop) < 0 ||
        get_int(obj, "no_new_privs", &p->no_new_privs) < 0 ||
        get_int(obj, "landlock", &p->landlock) < 0 ||
        get_seccomp(obj, p, alive) < 0 ||
        get_strings(obj, "argv", &p->argv, &n_argv, alive) < 0 ||
        get_strings(obj, "paths", &p->paths, &p->n_paths, alive) < 0)
        return -1;
    if (p->pwd_slot >= n_envp) {
        PyErr_SetString(PyExc_ValueError, "LastStep.pwd_slot is not an index of envp");
        return -1;
    }
    for (Py_ssize_t i = 0; i < p->n_cwds; i++) {
        Py_ssize_t len = (Py_ssize_t)strlen(p->cwds[i]);
        if (len > longest)
            longest = len;
    }
    p->pwd = PyMem_Calloc((size_t)longest + 5, 1);
    if (p->pwd == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (p->shell_fallback && n_argv > 0) {
        /* (filled when needed: after vfork nothing may allocate) */
        p->sh_argv = PyMem_Calloc((size_t)n_argv + 2, sizeof(char *));
        if (p->sh_argv == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    return 0;
}

void
last_step_free(struct plan *p)
{
    PyMem_Free(p->reset_signals);
    PyMem_Free(p->cwds);
    PyMem_Free(p->envp);
    PyMem_Free(p->pwd);
    PyMem_Free(p->rlimits);
    PyMem_Free(p->inherit);
    PyMem_Free(p->keep);
    PyMem_Free(p->close_std);
    PyMem_Free(p->drop);
    PyMem_Free(p->seccomp);
    PyMem_Free(p->argv);
    PyMem_Free(p->sh_argv);
    PyMem_Free(p->paths);
}

/* --- the steps (after vfork: system calls only) ------------------------------ */

#define FAIL(f, s, i, e)        \
    do {                        \
        (f)->step = (s);        \
        (f)->index = (i);       \
        (f)->err = (e);         \
        return -1;              \
    } while (0)

static void
close_all(int lo, int hi)
{
    for (int fd = lo; fd <= hi; fd++)
        close(fd);
}

static void
reset_signals(const struct plan *p)
{
    struct sigaction dfl, cur;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    /* A handler of the caller's (Python's C handlers) must never run here. */
    for (int sig = 1; sig < _NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        if (sigaction(sig, NULL, &cur) == 0 && cur.sa_handler != SIG_DFL && cur.sa_handler != SIG_IGN)
            sigaction(sig, &dfl, NULL);
    }
    /* And these start at their defaults even when the caller ignored them. */
    for (Py_ssize_t i = 0; i < p->n_reset_signals; i++)
        sigaction(p->reset_signals[i], &dfl, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

/* Kernels before 5.9 have no close_range (and a seccomp profile may refuse it):
 * close what /proc lists; without /proc (a root that has none, no fd left to
 * open it with), every number up to the caller's own hard limit on open files. */
static void
close_from_proc(int lo, int hi, int limit)
{
    char buf[4096];
    int dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) {
        close_all(lo, hi < limit ? hi : limit - 1);
        return;
    }
    for (;;) {
        long n = syscall(SYS_getdents64, dir, buf, sizeof buf);
        if (n <= 0)
            break;
        for (long off = 0; off < n;) {
            struct dirent64 *d = (struct dirent64 *)(buf + off);
            off += d->d_reclen;
            if (d->d_name[0] < '0' || d->d_name[0] > '9')
                continue;
            int fd = 0;
            for (const char *c = d->d_name; *c; c++)
                fd = fd * 10 + (*c - '0');
            if (fd >= lo && fd <= hi && fd != dir)
                close(fd);
        }
    }
    close(dir);
}

static void
close_range_of(int lo, int hi, int limit)
{
    if (lo > hi)
        return;
    if (syscall(SYS_close_range, (unsigned int)lo, (unsigned int)hi, 0) != 0)
        close_from_proc(lo, hi, limit);
}

/* ``limit``: one above the highest fd the caller could have opened */
static void
close_others(const struct plan *p, int limit)
{
    int lo = 3;
    for (Py_ssize_t i = 0; i < p->n_keep; i++) {
        int fd = p->keep[i];
        if (fd < lo)
            continue;
        close_range_of(lo, fd - 1, limit);
        lo = fd + 1;
    }
    close_range_of(lo, INT32_MAX, limit);
}

static int
fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_max == RLIM_INFINITY || rl.rlim_max > INT32_MAX)
        return 1 << 20;     /* the kernel's default nr_open */
    return (int)rl.rlim_max;
}

static int
caps_get(uint64_t *eff, uint64_t *prm, uint64_t *inh)
{
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &hdr, data) != 0)
        return -1;
    *eff = data[0].effective | (uint64_t)data[1].effective << 32;
    *prm = data[0].permitted | (uint64_t)data[1].permitted << 32;
    *inh = data[0].inheritable | (uint64_t)data[1].inheritable << 32;
    return 0;
}

static int
caps_set(uint64_t eff, uint64_t prm, uint64_t inh)
{
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2] = {
        {(uint32_t)eff, (uint32_t)prm, (uint32_t)inh},
        {(uint32_t)(eff >> 32), (uint32_t)(prm >> 32), (uint32_t)(inh >> 32)},
    };
    return (int)syscall(SYS_capset, &hdr, data);
}

/* "deny" in /proc/self/setgroups: this user namespace refuses setgroups. */
static int
setgroups_denied(void)
{
    char buf[8] = {0};
    int fd = open("/proc/self/setgroups", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    long n = read(fd, buf, sizeof buf - 1);
    close(fd);
    return n >= 4 && memcmp(buf, "deny", 4) == 0;
}

/* Whether vbdecl, the only reader of the pipe death_watch writes to, is gone: a
 * pipe's write end polls POLLERR once it has no reader left. */
static int
watched_parent_gone(const struct plan *p)
{
    struct pollfd pfd = {.fd = p->death_watch, .events = 0, .revents = 0};
    return p->death_watch >= 0 && poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLERR);
}

/* PR_SET_PDEATHSIG(SIGKILL) for the plan's expected parent; one gone already (we
 * were reparented) means we die now. The kernel clears the setting whenever our
 * uid or gid changes, so security() asks again after setresuid. pid 1 of a new
 * pid namespace sees its parent as 0 either way: death_watch tells for it. */
static int
death_signal(const struct plan *p, struct failure *f)
{
    if (p->death_parent < 0)
        return 0;
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0)
        FAIL(f, STEP_DEATH_SIGNAL, 0, errno);
    if (getppid() != p->death_parent || watched_parent_gone(p)) {    /* it died before we asked */
        kill(getpid(), SIGKILL);
        _exit(128 + SIGKILL);               /* (pid 1 of a namespace ignores its own kill) */
    }
    return 0;
}

static int
security(const struct plan *p, struct failure *f)
{
    uint64_t eff, prm, inh;
    if (p->assert_userns_disabled) {
        /* bubblewrap's test (we exit either way). Only a refusal counts as disabled:
         * EINVAL, say (a threaded caller), proves nothing. */
        if (syscall(SYS_unshare, CLONE_NEWUSER) == 0 || (errno != EPERM && errno != ENOSPC && errno != EUSERS))
            FAIL(f, STEP_ASSERT_USERNS, 0, 0);
    }
    if (caps_get(&eff, &prm, &inh) != 0)
        FAIL(f, STEP_CAPGET, 0, errno);
    if (p->hold && !(prm & p->hold))
        FAIL(f, STEP_HOLD, 0, 0);
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0)
        FAIL(f, STEP_KEEPCAPS, 1, errno);
    if (!setgroups_denied() && syscall(NR_SETGROUPS, 0, NULL) != 0) {
        /* No /proc in the root (vb without --proc): "deny" could not be read; an
         * unprivileged user namespace refuses setgroups, as bubblewrap expects. */
        if (errno != EPERM || access("/proc/self/setgroups", F_OK) == 0)
            FAIL(f, STEP_SETGROUPS, 0, errno);
    }
    if (syscall(NR_SETRESGID, p->gid, p->gid, p->gid) != 0)
        FAIL(f, STEP_SETRESGID, p->gid, errno);
    if (syscall(NR_SETRESUID, p->uid, p->uid, p->uid) != 0)
        FAIL(f, STEP_SETRESUID, p->uid, errno);
    if (death_signal(p, f) < 0)
        return -1;
    if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0)
        FAIL(f, STEP_KEEPCAPS, 0, errno);
    if (caps_get(&eff, &prm, &inh) != 0)
        FAIL(f, STEP_CAPGET, 0, errno);
    if (caps_set(prm, prm, inh) != 0)      /* leaving uid 0 cleared the effective set */
        FAIL(f, STEP_CAPSET, 0, errno);
    for (Py_ssize_t i = 0; i < p->n_drop; i++) {
        /* only what the set still has: dropping needs CAP_SETPCAP, even a cap not there */
        if (prctl(PR_CAPBSET_READ, p->drop[i], 0, 0, 0) > 0 && prctl(PR_CAPBSET_DROP, p->drop[i], 0, 0, 0) != 0)
            FAIL(f, STEP_BOUNDING, p->drop[i], errno);
    }
    if (p->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        FAIL(f, STEP_NO_NEW_PRIVS, 0, errno);
    if (caps_set(p->kept | p->hold, p->kept | p->hold, p->inheritable) != 0)
        FAIL(f, STEP_CAPSET, 1, errno);
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0)
        FAIL(f, STEP_AMBIENT, -1, errno);
    for (int cap = 0; cap < 64; cap++) {
        if (p->ambient >> cap & 1 && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) != 0)
            FAIL(f, STEP_AMBIENT, cap, errno);
    }
    /* (the ruleset fd is close-on-exec; the caller closes its own copy) */
    if (p->landlock >= 0 && syscall(SYS_landlock_restrict_self, p->landlock, 0) != 0)
        FAIL(f, STEP_LANDLOCK, 0, errno);
    for (Py_ssize_t i = 0; i < p->n_seccomp; i++) {
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &p->seccomp[i], 0, 0) != 0)
            FAIL(f, STEP_SECCOMP, i, errno);
    }
    if (p->hold && caps_set(p->kept, p->kept, p->inheritable) != 0)
        FAIL(f, STEP_CAPSET, 2, errno);
    return 0;
}

static int
exec_paths(const struct plan *p, struct failure *f)
{
    long denied = -1, no_interpreter = -1;
    int denied_err = 0;
    for (Py_ssize_t i = 0; i < p->n_paths; i++) {
        execve(p->paths[i], p->argv, p->envp);
        int err = errno;
        if (err == ENOEXEC && p->sh_argv != NULL) {
            /* a file without #! line or ELF header: a shell script, as execvp has it */
            Py_ssize_t n = 0;
            p->sh_argv[0] = "/bin/sh";
            p->sh_argv[1] = p->paths[i];
            while (p->argv[n] != NULL && p->argv[n + 1] != NULL) {
                p->sh_argv[n + 2] = p->argv[n + 1];
                n++;
            }
            p->sh_argv[n + 2] = NULL;
            execve("/bin/sh", p->sh_argv, p->envp);
            err = errno;    /* the shell's failure is the one to tell, as execvp's */
        }
        if (err == ENOENT || err == ENOTDIR || err == ELOOP || err == ENAMETOOLONG) {
            struct stat st;
            /* there, but what runs it (#! line, ELF loader) is not */
            if (err == ENOENT && no_interpreter < 0 && stat(p->paths[i], &st) == 0 && S_ISREG(st.st_mode))
                no_interpreter = i;
            continue;
        }
        if (denied < 0) {
            denied = i;
            denied_err = err;
        }
    }
    if (denied >= 0)
        FAIL(f, STEP_EXEC_DENIED, denied, denied_err);
    if (no_interpreter >= 0)
        FAIL(f, STEP_EXEC_NO_INTERPRETER, no_interpreter, ENOENT);
    FAIL(f, STEP_EXEC_NOT_FOUND, 0, ENOENT);
}

/* Every step; returns only on failure (or, without paths, after the last).
 * ``mask``: the signal mask to restore when the signal step is skipped. */
int
last_step_run(struct plan *p, struct failure *f, const sigset_t *mask)
{
    int limit = fd_limit();     /* before the rlimits step may lower it */
    if (p->n_reset_signals >= 0)
        reset_signals(p);
    else if (mask != NULL)
        sigprocmask(SIG_SETMASK, mask, NULL);
    if (p->new_session && setsid() < 0)
        FAIL(f, STEP_SETSID, 0, errno);
    if (death_signal(p, f) < 0)
        return -1;
    if (p->block >= 0) {
        /* vb --block-fd: the sandbox is built and the caller was told of it (--info-fd);
         * it goes on when the caller writes a byte (or closes its end), as bubblewrap */
        char b;
        while (read(p->block, &b, 1) < 0 && errno == EINTR)
            ;
        close(p->block);
    }
    Py_ssize_t c;
    for (c = 0; c < p->n_cwds; c++) {
        if (chdir(p->cwds[c]) == 0) {
            f->cwd = c;
            break;
        }
        if (c == p->n_cwds - 1)
            FAIL(f, STEP_CHDIR, c, errno);
    }
    if (p->pwd_slot >= 0 && c < p->n_cwds) {
        memcpy(p->pwd, "PWD=", 4);
        strcpy(p->pwd + 4, p->cwds[c]);
        p->envp[p->pwd_slot] = p->pwd;
    }
    for (Py_ssize_t i = 0; i < p->n_rlimits; i++) {
        if (setrlimit(p->rlimits[i].resource, &p->rlimits[i].value) != 0)
            FAIL(f, STEP_RLIMIT, i, errno);
    }
    for (Py_ssize_t i = 0; i < p->n_inherit; i++) {
        int flags = fcntl(p->inherit[i], F_GETFD);
        if (flags < 0 || fcntl(p->inherit[i], F_SETFD, flags & ~FD_CLOEXEC) < 0)
            FAIL(f, STEP_INHERIT, p->inherit[i], errno);
    }
    if (p->n_keep >= 0)
        close_others(p, limit);
    for (Py_ssize_t i = 0; i < p->n_close_std; i++)
        close(p->close_std[i]);
    if (p->userns2 >= 0) {
        if (syscall(SYS_setns, p->userns2, CLONE_NEWUSER) != 0)
            FAIL(f, STEP_USERNS2, p->userns2, errno);
        close(p->userns2);
    }
    if (p->security && security(p, f) < 0)
        return -1;
    if (p->n_paths == 0)
        return 0;
    return exec_paths(p, f);
}

/* last_step(spawn, plan) -> (pid, step, index, errno, cwd index) */
PyObject *
linux_last_step(PyObject *module, PyObject *args)
{
    (void)module;
    int spawn;
    PyObject *obj;
    if (!PyArg_ParseTuple(args, "pO:last_step", &spawn, &obj))
        return NULL;
    PyObject *alive = PyList_New(0);
    if (alive == NULL)
        return NULL;
    struct plan p;
    memset(&p, 0, sizeof p);
    PyObject *result = NULL;
    if (last_step_read(obj, &p, alive) < 0)
        goto done;

    volatile struct failure shared = {0, 0, 0, -1};
    pid_t pid = 0;
    if (!spawn) {
        struct failure f = {0, 0, 0, -1};
        last_step_run(&p, &f, NULL);
        shared.step = f.step;
        shared.index = f.index;
        shared.err = f.err;
        shared.cwd = f.cwd;
    } else {
        sigset_t all, old;
        sigfillset(&all);
        /* No handler of ours may run in the child, which shares our memory. */
        pthread_sigmask(SIG_SETMASK, &all, &old);
        /* The child's id changes reset the dumpable flag of the memory it shares with
         * us (commit_creds): ours, which we set back once it has exec'd. */
        int dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
        pid = vfork();
        if (pid == 0) {
            struct failure f = {0, 0, 0, -1};
            if (last_step_run(&p, &f, &old) == 0)
                f.step = STEP_EXEC_NOT_FOUND;   /* spawning needs a program */
            shared.step = f.step;
            shared.index = f.index;
            shared.err = f.err;
            shared.cwd = f.cwd;
            _exit(125);
        }
        int err = errno;
        if (dumpable >= 0 && prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != dumpable)
            prctl(PR_SET_DUMPABLE, dumpable, 0, 0, 0);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (pid < 0) {
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            goto done;
        }
    }
    result = Py_BuildValue("(iilil)", (int)pid, shared.step, shared.index, shared.err, shared.cwd);
done:
    last_step_free(&p);
    Py_DECREF(alive);
    return result;
}

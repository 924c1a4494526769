/*
 * The sandbox's first child, run in vbdecl's own memory, and pid 1's loop.
 *
 * fork() copies the page tables, and every page either process writes
 * afterwards is copied on that first write: a page fault (1.5-4 us on the
 * development VM) for each page the child's Python touches, ~400 of them
 * between fork and the process's execve, and more in the parent. clone with
 * CLONE_VM shares the memory instead, as vfork does for _posixsubprocess,
 * and lets the child run Python: the parent waits in shared_child(), holding
 * the GIL, while the child runs setup() as if it were the parent's thread.
 * Only one of them runs Python at any time, so the interpreter stays
 * consistent, on conditions this file and its caller keep:
 *
 *  - the child leaves Python only by returning from setup() or failed()
 *    (never os._exit, exec or fork inside them), so every frame it pushed
 *    is popped and every reference it took is dropped or handed back;
 *  - the parent waits, every signal blocked, until the child has left
 *    Python for good: it exec'd or exited (CLONE_CHILD_CLEARTID wakes us),
 *    or it runs init_loop(), which touches only its own stack and makes raw
 *    system calls (not even errno, which is the parent thread's);
 *  - a child killed inside Python (SIGKILL, the OOM killer) leaves the
 *    interpreter's state unknown: the parent then never returns into
 *    Python; it says so on stderr and exits 125;
 *  - our memory is not dumpable while the child shares it (a pid 1 for the
 *    whole run): no process of the sandbox may ptrace its way into it
 *    (CAP_SYS_PTRACE of our own user namespace would pass that check:
 *    spawn.shares_memory forks pid 1 where the sandbox could gain by it);
 *  - no other thread runs, and the parent has nothing to do while the child
 *    sets up: it writes no id maps (the child maps its own ids, if any) and
 *    runs no host actions (vbdecl.runtime.spawn.shares_memory checks).
 *
 * setup() returns what the child does next: an int (it reported a failure:
 * exit with that status), (pid, forward_tty, signals) (it is pid 1 and
 * spawned the process: run init_loop), or a LastStep (exec it in place; a
 * failed step calls failed(step, index, errno, cwd) for the status to exit
 * with). init_loop() is also what a forked pid 1 runs (one loop for both).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/futex.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "_laststep.h"

/* Raw system calls: the result, or -errno. Nothing else is touched, so pid 1
 * may make them while the parent runs (glibc's syscall() sets errno). */
#if defined(__x86_64__)
#define SHARED_CHILD 1
static inline long
raw_call(long nr, long a, long b, long c, long d)
{
    register long r10 __asm__("r10") = d;
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10)
                     : "rcx", "r11", "memory");
    return ret;
}
#elif defined(__aarch64__)
#define SHARED_CHILD 1
static inline long
raw_call(long nr, long a, long b, long c, long d)
{
    register long x8 __asm__("x8") = nr;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory", "cc");
    return x0;
}
#else
/* Elsewhere only a forked pid 1 runs init_loop (its errno is its own). */
#define SHARED_CHILD 0
static inline long
raw_call(long nr, long a, long b, long c, long d)
{
    long ret = syscall(nr, a, b, c, d);
    return ret < 0 ? -errno : ret;
}
#endif

#define STACK_SIZE (8L << 20)   /* what a thread gets; only the pages used are faulted */

enum { RUNNING = 1, IN_INIT_LOOP = 2 };   /* 0: gone from our memory (exit or exec) */

struct control {
    int32_t word;               /* RUNNING, IN_INIT_LOOP, or 0 (CLONE_CHILD_CLEARTID) */
    int in_python;              /* the child may be inside Python (see the file's comment) */
    int dumpable;               /* ours before the child, given back once it is gone */
    PyObject *setup, *failed;
    /* an exec in place: the plan stays alive until the parent frees it */
    PyObject *result, *alive;
    struct plan plan;
    int have_plan;
    /* the init loop's arguments, read before the child leaves Python */
    long main_pid;
    int forward_tty;
    uint64_t waitset;           /* the kernel's sigset (64 signals on both architectures) */
    char *region;               /* [guard page][stack ... ][this struct] */
    size_t region_size;
};

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)

static void
raw_exit(int code)
{
    raw_call(SYS_exit, code, 0, 0, 0);
    raw_call(SYS_exit_group, code, 0, 0, 0);
    /* A seccomp program refused both (one that denies every call): fault, which
     * the kernel delivers even blocked, as glibc's _exit does (SIGSEGV). */
    for (;;)
        *(volatile int *)0 = 0;
}

static int
status_code(int status)
{
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

#ifndef SYS_close_range
#define SYS_close_range 436
#endif

#if defined(__x86_64__)
#define INIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define INIT_ARCH AUDIT_ARCH_AARCH64
#endif

/* Install a seccomp filter that allows only the system calls ``calls`` (EPERM for
 * the others; another architecture's entry point kills the process): 0, or -errno.
 * Needs no_new_privs (or CAP_SYS_ADMIN). */
#define MAX_ALLOWED 32
static long
allow_only(const long *calls, int n)
{
#ifdef INIT_ARCH
    struct sock_filter code[4 + 2 * MAX_ALLOWED + 1];
    int len = 0;
    if (n > MAX_ALLOWED)
        return -EINVAL;
    code[len++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    code[len++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, INIT_ARCH, 1, 0);
    code[len++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
    code[len++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
    for (int i = 0; i < n; i++) {
        code[len++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)calls[i], 0, 1);
        code[len++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    }
    code[len++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA));
    struct sock_fprog prog = {(unsigned short)len, code};
    return raw_call(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, (long)&prog, 0);
#else
    (void)calls;
    (void)n;
    return -ENOSYS;
#endif
}

/* pid 1's own seccomp filter: the calls of its loop, nothing else. pid 1 holds no
 * filter of the process's, and in a user namespace of the sandbox's it stays
 * dumpable (the caller's tools read its /proc/PID/ns), so a process of the same uid
 * may ptrace it and make it call what the process's filter refuses (io_uring,
 * keyctl, ...): a review did. Needs no_new_privs, which child._confine_init set;
 * best effort without it. */
static void
confine_init_calls(void)
{
#ifdef INIT_ARCH
    static const long calls[] = {SYS_wait4, SYS_rt_sigtimedwait, SYS_kill, SYS_exit, SYS_exit_group,
                                 SYS_rt_sigreturn, SYS_restart_syscall};
    allow_only(calls, (int)(sizeof calls / sizeof calls[0]));
#endif
}

/* Reap every child; forward the signals in ``waitset`` but SIGCHLD to ``main``;
 * exit with main's status. ``main`` 0 (a live environment's init): reap until
 * SIGTERM, SIGINT or SIGHUP from outside its pid namespace, then exit 128 + it. A signal the terminal sent
 * (SI_KERNEL) also reached the main process, which shares our process group,
 * unless it has a session of its own (``forward_tty``). The waitset stays
 * blocked, so nothing is lost between a reap and the wait. */
static void __attribute__((noreturn))
run_init_loop(long main, int forward_tty, uint64_t waitset)
{
    /* Only the waitset blocked, and the caught signals back to their defaults: the
     * handlers are the Python parent's (whose state they would change). */
    struct { unsigned long handler, flags, restorer; uint64_t mask; } act, old;
    for (long sig = 1; sig <= 64; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP ||
            raw_call(SYS_rt_sigaction, sig, 0, (long)&old, sizeof(uint64_t)) != 0 ||
            old.handler == (unsigned long)SIG_DFL || old.handler == (unsigned long)SIG_IGN)
            continue;
        act.handler = (unsigned long)SIG_DFL;
        act.flags = act.restorer = 0;
        act.mask = 0;
        raw_call(SYS_rt_sigaction, sig, (long)&act, 0, sizeof(uint64_t));
    }
    raw_call(SYS_rt_sigprocmask, SIG_SETMASK, (long)&waitset, 0, sizeof waitset);
    /* pid 1 of its own pid namespace: a stop comes from outside it (below) */
    int own_pidns = raw_call(SYS_getpid, 0, 0, 0, 0) == 1;
    confine_init_calls();
    for (;;) {
        long pid;
        for (;;) {
            int status = 0;
            pid = raw_call(SYS_wait4, -1, (long)&status, WNOHANG, 0);
            if (pid == -EINTR)
                continue;
            if (pid <= 0)
                break;
            if (main > 0 && pid == main)
                raw_exit(status_code(status));
        }
        if (pid == -ECHILD && main > 0)     /* no child, no status: cannot happen */
            raw_exit(125);
        siginfo_t info;
        memset(&info, 0, sizeof info);
        long sig = raw_call(SYS_rt_sigtimedwait, (long)&waitset, (long)&info, 0, sizeof waitset);
        if (sig <= 0 || sig == SIGCHLD)
            continue;
        if (main <= 0) {
            /* A live environment's init ends on these from outside only (si_pid 0: a
               sender in an ancestor pid namespace, vbdecl's stop); the process inside,
               root there, ended its whole environment with `kill -HUP 1` (a review). */
            if ((sig == SIGTERM || sig == SIGINT || sig == SIGHUP) && (info.si_pid == 0 || !own_pidns))
                raw_exit(128 + (int)sig);
            continue;
        }
        if (info.si_code == SI_KERNEL && !forward_tty)
            continue;
        raw_call(SYS_kill, main, sig, 0, 0);
    }
}

static int
signal_set(PyObject *signals, uint64_t *set)
{
    PyObject *seq = PySequence_Fast(signals, "init_loop: signals must be a sequence");
    if (seq == NULL)
        return -1;
    *set = 0;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        long sig = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (sig == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        if (sig < 1 || sig > 64) {
            Py_DECREF(seq);
            PyErr_Format(PyExc_ValueError, "init_loop: no signal %ld", sig);
            return -1;
        }
        *set |= (uint64_t)1 << (sig - 1);
    }
    Py_DECREF(seq);
    return 0;
}

/* confine_supervisor() -> 0, or -errno: the seccomp filter of a live environment's
 * process supervisor (runtime.live._supervise), for the rest of its life. It runs
 * Python, so its calls are those of its loop and of the runtime under it: reap
 * (wait4, waitid), write the exit record and the events (write, pwrite64,
 * ftruncate, close, close_range), read the OOM kills of its memory cgroup (pread64,
 * on an fd it was given), move the process's log aside when it grows too large (lseek,
 * pread64, pwrite64, ftruncate on the fds it was given; runtime.live.LogCap), wait
 * for SIGCHLD a second at a time (rt_sigtimedwait), memory (brk, mmap, munmap, mremap, madvise),
 * the clock, signals' return, the exits. Everything else fails with EPERM (another
 * architecture's entry point kills it): a process that got into it (ptrace, with
 * CAP_SYS_PTRACE where it has no user namespace of its own) cannot make it fork
 * outside the environment's cgroups, exec, open, or enter anything. Needs
 * no_new_privs, which the caller set first. */
PyObject *
linux_confine_supervisor(PyObject *module, PyObject *noargs)
{
    (void)module;
    (void)noargs;
#ifdef INIT_ARCH
    static const long calls[] = {
        SYS_wait4, SYS_waitid, SYS_write, SYS_pwrite64, SYS_ftruncate, SYS_close, SYS_close_range,
        SYS_read, SYS_pread64, SYS_lseek, SYS_rt_sigtimedwait, SYS_brk, SYS_mmap, SYS_munmap, SYS_mremap, SYS_madvise, SYS_clock_gettime,
        SYS_futex, SYS_getpid, SYS_gettid, SYS_rt_sigprocmask, SYS_rt_sigreturn,
        SYS_restart_syscall, SYS_exit, SYS_exit_group,
    };
    return PyLong_FromLong(allow_only(calls, (int)(sizeof calls / sizeof calls[0])));
#else
    return PyLong_FromLong(-ENOSYS);
#endif
}

/* init_loop(main_pid, forward_tty, signals): pid 1's loop; never returns.
 * The caller has blocked ``signals`` (SIGCHLD among them). */
PyObject *
linux_init_loop(PyObject *module, PyObject *args)
{
    (void)module;
    long main;
    int forward_tty;
    PyObject *signals;
    uint64_t set;
    if (!PyArg_ParseTuple(args, "lpO:init_loop", &main, &forward_tty, &signals) ||
        signal_set(signals, &set) < 0)
        return NULL;
    run_init_loop(main, forward_tty, set);
}

#if SHARED_CHILD

/* Python's answer, read while the child still runs Python: PROCEED with what to
 * do next in ``c``, or the status to exit with (never 0: the child failed). */
#define PROCEED (-1)

static int
exit_status(long code)
{
    return code > 0 && code < 256 ? (int)code : 125;
}

static int
take_result(struct control *c, PyObject *result)
{
    if (result == NULL) {       /* setup() and failed() catch everything: a bug */
        PyErr_Print();
        return 125;
    }
    if (PyLong_Check(result)) {
        long code = PyLong_AsLong(result);
        Py_DECREF(result);
        PyErr_Clear();
        return exit_status(code);
    }
    if (PyTuple_Check(result)) {
        PyObject *signals;
        int ok = PyArg_ParseTuple(result, "lpO", &c->main_pid, &c->forward_tty, &signals) &&
                 signal_set(signals, &c->waitset) == 0 && c->main_pid > 0;
        Py_DECREF(result);
        if (!ok) {
            if (PyErr_Occurred())
                PyErr_Print();
            return 125;
        }
        return PROCEED;
    }
    c->result = result;         /* the parent frees it, the plan and ``alive`` */
    c->alive = PyList_New(0);
    if (c->alive == NULL || last_step_read(result, &c->plan, c->alive) < 0) {
        PyErr_Print();
        return 125;
    }
    c->have_plan = 1;
    return PROCEED;
}

static int
child_main(void *arg)
{
    struct control *c = arg;     /* in_python is set: from the clone on */
    int code = take_result(c, PyObject_CallNoArgs(c->setup));
    STORE(c->in_python, 0);
    if (code != PROCEED)
        raw_exit(code);
    if (!c->have_plan) {
        /* pid 1: the parent may run again once we are out of its way */
        STORE(c->word, IN_INIT_LOOP);
        raw_call(SYS_futex, (long)&c->word, FUTEX_WAKE, 1, 0);
        run_init_loop(c->main_pid, c->forward_tty, c->waitset);
    }
    struct failure f = {0, 0, 0, -1};
    if (last_step_run(&c->plan, &f, NULL) == 0)
        f.step = STEP_EXEC_NOT_FOUND;           /* a plan to exec names a program */
    STORE(c->in_python, 1);
    code = take_result(c, PyObject_CallFunction(c->failed, "iiii", f.step, (int)f.index, f.err,
                                                (int)f.cwd));
    STORE(c->in_python, 0);
    raw_exit(code == PROCEED ? 125 : code);
    return 125;
}

/* Once the child has left Python: what it left for us to free (an exec in place)
 * and our references. */
static void
collect(struct control *c)
{
    last_step_free(&c->plan);   /* (zeroed, or partly read: both free) */
    Py_CLEAR(c->alive);
    Py_CLEAR(c->result);
    Py_CLEAR(c->setup);
    Py_CLEAR(c->failed);
}

/* Once the child is gone from our memory: our dumpable flag back, the region. */
static void
give_back(struct control *c)
{
    if (c->dumpable >= 0 && prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != c->dumpable)
        prctl(PR_SET_DUMPABLE, c->dumpable, 0, 0, 0);
    munmap(c->region, c->region_size);
}

/* shared_child(flags, setup, failed) -> (pid, handle): see the file's comment.
 * ``flags``: more clone flags (CLONE_NEWUSER, CLONE_NEWPID). ``handle``: 0 when
 * the child has exec'd or exited; else pid 1 runs init_loop on a stack of ours,
 * which release_child(handle) frees once pid 1 has been reaped. */
PyObject *
linux_shared_child(PyObject *module, PyObject *args)
{
    (void)module;
    unsigned long flags;
    PyObject *setup, *failed;
    if (!PyArg_ParseTuple(args, "kOO:shared_child", &flags, &setup, &failed))
        return NULL;
    long page = sysconf(_SC_PAGESIZE);
    size_t size = (size_t)(STACK_SIZE + page);
    char *region = mmap(NULL, size, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (region == MAP_FAILED)
        return PyErr_SetFromErrno(PyExc_OSError);
    if (mprotect(region, (size_t)page, PROT_NONE) != 0) {   /* a stack overflow faults */
        PyErr_SetFromErrno(PyExc_OSError);
        munmap(region, size);
        return NULL;
    }
    struct control *c = (struct control *)(region + size - sizeof(struct control));
    c = (struct control *)((uintptr_t)c & ~(uintptr_t)63);
    memset(c, 0, sizeof *c);
    c->word = RUNNING;
    c->in_python = 1;
    c->region = region;
    c->region_size = size;
    c->setup = Py_NewRef(setup);
    c->failed = Py_NewRef(failed);
    char *stack_top = (char *)((uintptr_t)c & ~(uintptr_t)15);

    /* No collection in the child: a finalizer there would act on its fds and its
     * mounts for objects of ours (a file object would close the child's copy). */
    int gc_was = PyGC_Disable();
    sigset_t all, old;
    sigfillset(&all);
    /* none of our handlers may run in the child, and none of our signals here */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    /* A pid 1 shares our memory for the whole run, and the sandbox's processes
     * could ptrace it (with the capabilities of their user namespace) and so write
     * into ours, outside every namespace: it makes our memory not dumpable before
     * it spawns the first of them (child.SharedSetup; not before: a new user
     * namespace's maps are written through /proc/self, which root owns then).
     * Non-dumpable memory needs CAP_SYS_PTRACE in our own user namespace. We get
     * our flag back once the child is gone (an exec in place changes ids, which
     * resets it too: commit_creds). */
    c->dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
    pid_t pid = clone(child_main, stack_top, (int)(CLONE_VM | CLONE_CHILD_CLEARTID | SIGCHLD | flags),
                      c, NULL, NULL, &c->word);
    int err = errno;
    int32_t w = 0;
    if (pid > 0) {
        while ((w = LOAD(c->word)) == RUNNING)
            syscall(SYS_futex, &c->word, FUTEX_WAIT, RUNNING, NULL);
        if (LOAD(c->in_python)) {
            static const char msg[] =
                "vbdecl: the sandbox's setup process was killed while it ran in vbdecl's memory; "
                "vbdecl cannot go on safely and exits (nothing of the sandbox remains)\n";
            ssize_t n = write(2, msg, sizeof msg - 1);
            (void)n;
            _exit(125);
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (gc_was)
        PyGC_Enable();
    collect(c);
    if (pid < 0) {
        give_back(c);
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (w != IN_INIT_LOOP) {
        give_back(c);
        return Py_BuildValue("(ik)", (int)pid, 0UL);
    }
    return Py_BuildValue("(ik)", (int)pid, (unsigned long)(uintptr_t)c);
}

/* release_child(handle): once pid 1 has been reaped, free its stack and make us
 * dumpable again (if we were). */
PyObject *
linux_release_child(PyObject *module, PyObject *arg)
{
    (void)module;
    unsigned long handle = PyLong_AsUnsignedLong(arg);
    if (handle == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    if (handle != 0)
        give_back((struct control *)(uintptr_t)handle);
    Py_RETURN_NONE;
}

#else

PyObject *
linux_shared_child(PyObject *module, PyObject *args)
{
    (void)module;
    (void)args;
    PyErr_SetString(PyExc_NotImplementedError, "shared_child: not on this architecture");
    return NULL;
}

PyObject *
linux_release_child(PyObject *module, PyObject *arg)
{
    (void)module;
    (void)arg;
    Py_RETURN_NONE;
}

#endif

const int shared_child_supported = SHARED_CHILD;

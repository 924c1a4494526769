/*
 * The process's last steps (_laststep.c), for the other compiled parts of
 * vbdecl.sys._linux: _sharedchild.c runs them in a child that shares vbdecl's memory.
 */
#ifndef VBDECL_LASTSTEP_H
#define VBDECL_LASTSTEP_H

#include <Python.h>

#include <linux/filter.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>

/* The steps, numbered from 1 in this order. vbdecl/sys/laststep.py names the same
 * numbers; _linux.LAST_STEPS (these names, in order) lets a test hold them equal. */
#define LAST_STEPS(X) \
    X(SETSID) X(DEATH_SIGNAL) X(CHDIR) X(RLIMIT) X(INHERIT) X(USERNS2) X(ASSERT_USERNS) \
    X(HOLD) X(KEEPCAPS) X(SETGROUPS) X(SETRESGID) X(SETRESUID) X(CAPGET) X(CAPSET) \
    X(BOUNDING) X(NO_NEW_PRIVS) X(AMBIENT) X(LANDLOCK) X(SECCOMP) X(EXEC_DENIED) \
    X(EXEC_NO_INTERPRETER) X(EXEC_NOT_FOUND)

#define STEP_ENUM(name) STEP_##name,
enum { STEP_OK = 0, LAST_STEPS(STEP_ENUM) };

struct limit {
    int resource;
    struct rlimit value;
};

struct plan {
    int *reset_signals;          /* set to SIG_DFL, with every caught signal */
    Py_ssize_t n_reset_signals;  /* -1: leave the signal state alone */
    int new_session;
    long death_parent;           /* -1: none */
    int death_watch;             /* a pipe's write end read by vbdecl alone; -1: none */
    char **cwds;
    Py_ssize_t n_cwds;
    char **envp;                 /* NULL-terminated */
    long pwd_slot;               /* -1: none; else envp[pwd_slot] becomes "PWD=<cwd>" */
    char *pwd;                   /* room for "PWD=" and the longest cwd */
    struct limit *rlimits;
    Py_ssize_t n_rlimits;
    int *inherit;
    Py_ssize_t n_inherit;
    int *keep;                   /* sorted: every other fd from 3 up is closed */
    Py_ssize_t n_keep;           /* -1: close nothing */
    int *close_std;              /* stdio fds to close too (vb: named by --info-fd and the like) */
    Py_ssize_t n_close_std;
    int userns2;                 /* -1: none */
    int block;                   /* vb --block-fd: read a byte from it, then close it; -1: none */
    int shell_fallback;          /* an ENOEXEC file runs through /bin/sh (execvp's way) */
    char **sh_argv;              /* room for that: "/bin/sh", the path, argv[1:], NULL */
    int security;
    int assert_userns_disabled;
    uint64_t hold, kept, inheritable, ambient;
    long uid, gid;
    int *drop;
    Py_ssize_t n_drop;
    int no_new_privs;
    int landlock;                /* ruleset fd, or -1 */
    struct sock_fprog *seccomp;
    Py_ssize_t n_seccomp;
    char **argv;                 /* NULL-terminated */
    char **paths;
    Py_ssize_t n_paths;          /* 0: stop before execve (and report success) */
};

struct failure {
    int step;
    long index;
    int err;
    long cwd;                    /* the index in cwds of the cwd taken, or -1 */
};

/* Copy a LastStep into C memory; ``alive`` (a list) keeps the bytes it points into.
 * -1 with a Python error set when the plan is malformed or memory runs out. */
int last_step_read(PyObject *obj, struct plan *p, PyObject *alive);
/* Free what last_step_read allocated. */
void last_step_free(struct plan *p);
/* Every step, system calls only (no Python, no allocation); returns only on failure
 * (-1, ``f`` set) or, without paths, after the last (0). ``mask``: the signal mask
 * to restore when the signal step is skipped (NULL: leave it). */
int last_step_run(struct plan *p, struct failure *f, const sigset_t *mask);

#endif

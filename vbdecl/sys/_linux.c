/*
 * vbdecl.sys._linux: raw Linux system calls for vbdecl's sys layer.
 *
 * One generic entry point, syscall(nr, *args), the syscall numbers of the
 * calls vbdecl makes (NR), taken from the kernel headers at build time, and
 * last_step(spawn, plan), the process's last steps before execve (in
 * _laststep.c), and shared_child/release_child/init_loop, the sandbox's first
 * child in our memory and pid 1's loop (in _sharedchild.c). It replaces ctypes, whose import alone costs every `vbdecl run` and `vb` ~2 ms;
 * this module loads in ~0.1 ms. The typed helpers, argument checks and error
 * messages stay in Python (the modules of vbdecl/sys).
 *
 * Arguments: an int is passed as a machine word (negative values as such,
 * flags up to 2**64-1 as unsigned), None as NULL, bytes as a pointer to its
 * NUL-terminated contents (read-only input: paths, structs), and any writable
 * buffer (bytearray) as a pointer to its memory (structs the kernel fills in).
 * The result is the call's return value, or -errno when it failed: no
 * exception, so that a caller that expects a failure pays nothing for it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_ARGS 6

static int
to_word(PyObject *obj, long *word, Py_buffer *view, int *has_view)
{
    if (obj == Py_None) {
        *word = 0;
        return 0;
    }
    if (PyLong_Check(obj)) {
        int overflow = 0;
        long value = PyLong_AsLongAndOverflow(obj, &overflow);
        if (overflow > 0) {
            unsigned long u = PyLong_AsUnsignedLong(obj);
            if (u == (unsigned long)-1 && PyErr_Occurred())
                return -1;
            value = (long)u;
        } else if (overflow < 0) {
            PyErr_SetString(PyExc_OverflowError, "syscall argument below the smallest word");
            return -1;
        } else if (value == -1 && PyErr_Occurred()) {
            return -1;
        }
        *word = value;
        return 0;
    }
    if (PyBytes_Check(obj)) {
        *word = (long)PyBytes_AS_STRING(obj);
        return 0;
    }
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE) == 0) {
        *has_view = 1;
        *word = (long)view->buf;
        return 0;
    }
    PyErr_Clear();
    PyErr_Format(PyExc_TypeError,
                 "syscall argument must be int, None, bytes or a writable buffer, not %.100s",
                 Py_TYPE(obj)->tp_name);
    return -1;
}

static PyObject *
linux_syscall(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs < 1 || nargs > MAX_ARGS + 1) {
        PyErr_SetString(PyExc_TypeError, "syscall(nr, *args) takes a number and at most 6 arguments");
        return NULL;
    }
    long nr = PyLong_AsLong(args[0]);
    if (nr == -1 && PyErr_Occurred())
        return NULL;

    long word[MAX_ARGS] = {0};
    Py_buffer view[MAX_ARGS];
    int has_view[MAX_ARGS] = {0};
    Py_ssize_t n = nargs - 1;
    Py_ssize_t i;
    PyObject *result = NULL;

    for (i = 0; i < n; i++) {
        if (to_word(args[i + 1], &word[i], &view[i], &has_view[i]) < 0)
            goto done;
    }
    long ret;
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    ret = syscall(nr, word[0], word[1], word[2], word[3], word[4], word[5]);
    if (ret == -1)
        err = errno;
    Py_END_ALLOW_THREADS
    result = PyLong_FromLong(ret == -1 ? -err : ret);
done:
    for (i = 0; i < n; i++) {
        if (has_view[i])
            PyBuffer_Release(&view[i]);
    }
    return result;
}

/* vbdecl/sys/_laststep.c */
PyObject *linux_last_step(PyObject *module, PyObject *args);
extern const char *const last_step_names[];
PyObject *linux_shared_child(PyObject *module, PyObject *args);
PyObject *linux_release_child(PyObject *module, PyObject *arg);
PyObject *linux_init_loop(PyObject *module, PyObject *args);
PyObject *linux_confine_supervisor(PyObject *module, PyObject *noargs);
extern const int shared_child_supported;

static PyMethodDef linux_methods[] = {
    {"syscall", (PyCFunction)(void (*)(void))linux_syscall, METH_FASTCALL,
     "syscall(nr, *args) -> result, or -errno when the call failed"},
    {"last_step", linux_last_step, METH_VARARGS,
     "last_step(spawn, plan) -> (pid, step, index, errno): the process's last steps (see _laststep.c)"},
    {"shared_child", linux_shared_child, METH_VARARGS,
     "shared_child(flags, setup, failed) -> (pid, handle): the first child, in our memory (see _sharedchild.c)"},
    {"release_child", linux_release_child, METH_O,
     "release_child(handle): free the stack of a reaped shared pid 1"},
    {"init_loop", linux_init_loop, METH_VARARGS,
     "init_loop(main_pid, forward_tty, signals): pid 1's loop; never returns"},
    {"confine_supervisor", linux_confine_supervisor, METH_NOARGS,
     "confine_supervisor() -> 0, or -errno: the process supervisor's seccomp filter"},
    {NULL, NULL, 0, NULL},
};

/* Calls new enough that the build host's headers may lack them: the numbers
 * are the same on every architecture since the syscall table was unified
 * (424 and up). */
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_fsopen
#define SYS_fsopen 430
#endif
#ifndef SYS_fsconfig
#define SYS_fsconfig 431
#endif
#ifndef SYS_fsmount
#define SYS_fsmount 432
#endif
#ifndef SYS_fspick
#define SYS_fspick 433
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#endif
#ifndef SYS_landlock_add_rule
#define SYS_landlock_add_rule 445
#endif
#ifndef SYS_landlock_restrict_self
#define SYS_landlock_restrict_self 446
#endif
#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452
#endif

static const struct {
    const char *name;
    long nr;
} syscall_numbers[] = {
    {"capget", SYS_capget},
    {"capset", SYS_capset},
    {"close_range", SYS_close_range},
    {"fchmodat2", SYS_fchmodat2},
    {"fsconfig", SYS_fsconfig},
    {"fsmount", SYS_fsmount},
    {"fsopen", SYS_fsopen},
    {"fspick", SYS_fspick},
    {"landlock_add_rule", SYS_landlock_add_rule},
    {"landlock_create_ruleset", SYS_landlock_create_ruleset},
    {"landlock_restrict_self", SYS_landlock_restrict_self},
    {"mount", SYS_mount},
    {"mount_setattr", SYS_mount_setattr},
    {"move_mount", SYS_move_mount},
    {"open_tree", SYS_open_tree},
    {"openat2", SYS_openat2},
    {"pidfd_open", SYS_pidfd_open},
    {"pidfd_send_signal", SYS_pidfd_send_signal},
    {"pivot_root", SYS_pivot_root},
    {"prctl", SYS_prctl},
    {"seccomp", SYS_seccomp},
    {"sethostname", SYS_sethostname},
    {"setns", SYS_setns},
    {"socket", SYS_socket},
    {"statx", SYS_statx},
    {"umount2", SYS_umount2},
    {"unshare", SYS_unshare},
    {"clone3", SYS_clone3},
};

static int
linux_exec(PyObject *module)
{
    PyObject *numbers = PyDict_New();
    if (numbers == NULL)
        return -1;
    for (size_t i = 0; i < sizeof(syscall_numbers) / sizeof(syscall_numbers[0]); i++) {
        PyObject *nr = PyLong_FromLong(syscall_numbers[i].nr);
        if (nr == NULL || PyDict_SetItemString(numbers, syscall_numbers[i].name, nr) < 0) {
            Py_XDECREF(nr);
            Py_DECREF(numbers);
            return -1;
        }
        Py_DECREF(nr);
    }
    if (PyModule_AddIntConstant(module, "SHARED_CHILD", shared_child_supported) < 0) {
        Py_DECREF(numbers);
        return -1;
    }
    if (PyModule_AddObject(module, "NR", numbers) < 0) {
        Py_DECREF(numbers);
        return -1;
    }
    PyObject *steps = PyList_New(0);
    if (steps == NULL)
        return -1;
    for (size_t i = 0; last_step_names[i] != NULL; i++) {
        PyObject *name = PyUnicode_FromString(last_step_names[i]);
        if (name == NULL || PyList_Append(steps, name) < 0) {
            Py_XDECREF(name);
            Py_DECREF(steps);
            return -1;
        }
        Py_DECREF(name);
    }
    PyObject *names = PyList_AsTuple(steps);
    Py_DECREF(steps);
    if (names == NULL || PyModule_AddObject(module, "LAST_STEPS", names) < 0) {
        Py_XDECREF(names);
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot linux_slots[] = {
    {Py_mod_exec, linux_exec},
    {0, NULL},
};

static struct PyModuleDef linux_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "vbdecl.sys._linux",
    .m_doc = "Raw Linux system calls for vbdecl's sys layer.",
    .m_size = 0,
    .m_methods = linux_methods,
    .m_slots = linux_slots,
};

PyMODINIT_FUNC
PyInit__linux(void)
{
    return PyModuleDef_Init(&linux_module);
}

"""no_new_privs, disable_userns and the order of apply_in_child, seen from inside."""

from __future__ import annotations

from pathlib import Path

from test_security_support import python, run, spec, status

MAX_USERNS = Path("/proc/sys/user/max_user_namespaces")


def test_no_new_privs_on_by_default_and_off_on_request(tmp_path: Path) -> None:
    assert status(tmp_path, spec())["NoNewPrivs"] == "1"
    s = spec()
    del s["security"]["no_new_privs"]
    assert status(tmp_path, s)["NoNewPrivs"] == "1"
    assert status(tmp_path, spec({"no_new_privs": False}))["NoNewPrivs"] == "0"


def test_seccomp_is_installed_with_everything_else(tmp_path: Path) -> None:
    from vbdecl.ops import sec

    the_spec = spec({"seccomp": "default", "landlock": {"read": ["/"], "execute": ["/usr"]}})
    st = status(tmp_path, the_spec)
    filters = 1 + sec.landlock_handles_tcp(the_spec)     # (Landlock's sockets)
    assert (st["Seccomp"], st["Seccomp_filters"], st["NoNewPrivs"]) == ("2", str(filters), "1")


def test_disable_userns_refuses_nested_user_namespaces(tmp_path: Path) -> None:
    host_limit = MAX_USERNS.read_text()
    on = spec({"disable_userns": True}, userns=True)
    r = run(tmp_path, on, ["/usr/bin/unshare", "-U", "true"], userns=True)
    assert r.code != 0 and "No space left on device" in r.err, r
    # The payload is root in its namespace but cannot raise the limit again.
    r = run(tmp_path, on, ["/bin/sh", "-c", "cat /proc/sys/user/max_user_namespaces; "
                                            "echo 100 > /proc/sys/user/max_user_namespaces"],
            userns=True)
    assert r.out.strip() == "0" and r.code != 0, r
    # Control: the same payload without disable_userns creates one.
    r = run(tmp_path, spec(userns=True), ["/usr/bin/unshare", "-U", "true"], userns=True)
    assert r.code == 0, r
    assert MAX_USERNS.read_text() == host_limit          # the host was never touched


def test_disable_userns_needs_a_user_namespace(tmp_path: Path) -> None:
    host_limit = MAX_USERNS.read_text()
    r = run(tmp_path, spec({"disable_userns": True}), ["/bin/true"])
    assert r.code == 125 and "needs namespaces.user" in r.err, r
    # Even a spec that claims a user namespace is refused when the process is in the host's.
    r = run(tmp_path, spec({"disable_userns": True}, userns=True), ["/bin/true"])
    assert r.code == 125 and "refusing to change user.max_user_namespaces" in r.err, r
    assert MAX_USERNS.read_text() == host_limit


def test_assert_userns_disabled(tmp_path: Path) -> None:
    r = run(tmp_path, spec({"disable_userns": True}, userns=True, vb={"assert_userns_disabled": True}),
            ["/bin/true"], userns=True)
    assert r.code == 0, r
    r = run(tmp_path, spec(userns=True, vb={"assert_userns_disabled": True}), ["/bin/true"], userns=True)
    assert r.code == 125 and "was not disabled as requested" in r.err, r


def test_caps_in_a_user_namespace_default_and_drop_all(tmp_path: Path) -> None:
    st = status(tmp_path, spec(userns=True), userns=True)
    assert st["CapEff"] == st["CapBnd"] and st["CapEff"] != 0
    st = status(tmp_path, spec({"capabilities": {"drop": ["ALL"]}, "seccomp": "default"}, userns=True),
                userns=True)
    assert (st["CapEff"], st["CapBnd"], st["NoNewPrivs"]) == (0, 0, "1")
    r = python(tmp_path, spec({"capabilities": {"drop": ["ALL"]}}, userns=True),
               "import os; os.setuid(5); print('setuid worked')", userns=True)
    assert r.code != 0 and "Operation not permitted" in r.err, r


def test_without_no_new_privs_filters_still_load_and_sys_admin_is_gone(tmp_path: Path) -> None:
    s = spec({"no_new_privs": False, "seccomp": {"deny": ["@swap"]},
              "landlock": {"read": ["/"], "execute": ["/usr"]},
              "capabilities": {"add": ["NET_BIND_SERVICE"]}}, user=1000, group=1000)
    st = status(tmp_path, s)
    assert (st["NoNewPrivs"], st["Seccomp"]) == ("0", "2")
    assert st["CapEff"] == st["CapPrm"] == st["CapAmb"] == 1 << 10
    assert not st["CapBnd"] & (1 << 21)
    r = python(tmp_path, s, "open('/tmp/vbdecl-sec-never', 'w')")
    assert r.code != 0 and "Permission denied" in r.err, r      # Landlock is on

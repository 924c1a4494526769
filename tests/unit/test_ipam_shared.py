"""The shared network state file: two checksummed slots, torn writes survive."""

from __future__ import annotations

import json
from pathlib import Path

from vbdecl.net import shared


def test_roundtrip_and_idempotent_users(tmp_path: Path) -> None:
    env = str(tmp_path / "envs" / "a")
    with shared.locked(env) as st:
        st["bridges"]["br0"] = {"users": []}
        shared.add_user(st["bridges"]["br0"]["users"], "vb-1")
        shared.add_user(st["bridges"]["br0"]["users"], "vb-1")
    assert shared.read(env)["bridges"]["br0"]["users"] == ["vb-1"]
    with shared.locked(env) as st:
        shared.remove_user(st["bridges"]["br0"]["users"], "vb-1")
        shared.remove_user(st["bridges"]["br0"]["users"], "vb-1")
    assert shared.read(env)["bridges"]["br0"]["users"] == []


def test_torn_write_falls_back_to_the_other_slot(tmp_path: Path) -> None:
    env = str(tmp_path / "envs" / "a")
    with shared.locked(env) as st:
        st["leases"]["10.0.0.0/24"] = {"10.0.0.2": "vb-1"}
    with shared.locked(env) as st:
        st["leases"]["10.0.0.0/24"]["10.0.0.3"] = "vb-2"
    assert len(shared.read(env)["leases"]["10.0.0.0/24"]) == 2
    # tear the newest slot: the previous state comes back, never garbage
    newest = max((tmp_path / n for n in shared.SLOTS), key=lambda p: json.loads(p.read_bytes())["gen"])
    newest.write_bytes(newest.read_bytes()[:40])
    assert shared.read(env)["leases"]["10.0.0.0/24"] == {"10.0.0.2": "vb-1"}
    # and the next write goes on from there
    with shared.locked(env) as st:
        st["leases"]["10.0.0.0/24"]["10.0.0.4"] = "vb-3"
    assert set(shared.read(env)["leases"]["10.0.0.0/24"]) == {"10.0.0.2", "10.0.0.4"}


def test_unchanged_state_is_not_written(tmp_path: Path) -> None:
    env = str(tmp_path / "envs" / "a")
    with shared.locked(env):
        pass
    assert not any((tmp_path / n).exists() for n in shared.SLOTS)


def test_state_root_of(tmp_path: Path) -> None:
    assert shared.state_root_of(str(tmp_path / "envs" / "web")) == tmp_path
    assert shared.state_root_of(str(tmp_path)) == tmp_path       # a run passes the root itself
    import os

    os.environ["VBDECL_STATE_DIR"] = str(tmp_path / "x")
    try:
        assert shared.state_root_of("") == tmp_path / "x"
    finally:
        del os.environ["VBDECL_STATE_DIR"]


def test_both_slots_damaged_is_said_not_started_afresh(tmp_path: Path) -> None:
    """A crash review wrote garbage over both slots: vbdecl started a fresh state without
    a word, and its next apply gave a live environment's bridge up as not vbdecl's. A
    write tears only the slot it writes, so both bad is damage from outside."""
    import pytest

    from vbdecl.errors import StateError

    env = str(tmp_path / "envs" / "a")
    for _ in range(2):
        with shared.locked(env) as st:
            st["leases"]["10.0.0.0/24"] = {"10.0.0.2": "vb-1"} if not st["leases"] else {}
    for name in shared.SLOTS:
        (tmp_path / name).write_bytes(b"\x00garbage")
    with pytest.raises(StateError, match=r"neither net\.0\.json nor net\.1\.json holds a valid copy") as err:
        shared.read(env)
    assert "move both away" in (err.value.hint or "")
    (tmp_path / shared.SLOTS[1]).unlink()      # one torn first write, the other never made: empty
    assert shared.read(env)["leases"] == {}


def test_slots_an_older_vbdecl_wrote_are_read(tmp_path: Path) -> None:
    """The session's review: slots written before 2026-11-28 carry a sha256, not a crc32;
    the damaged-slots error would have stopped every command on a bridge after an upgrade."""
    import hashlib

    data = {"format": 1, "bridges": {}, "leases": {"10.0.0.0/24": {"10.0.0.2": "vb-1"}}, "instances": {}}
    body = json.dumps(data, sort_keys=True)
    for gen, name in enumerate(shared.SLOTS, start=1):
        doc = {"gen": gen, "sha256": hashlib.sha256(body.encode()).hexdigest(), "data": data}
        (tmp_path / name).write_text(json.dumps(doc, sort_keys=True) + "\n")
    assert shared.read(str(tmp_path / "envs" / "a"))["leases"] == data["leases"]

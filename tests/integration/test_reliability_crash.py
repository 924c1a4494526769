"""Crash recovery through the real CLI: SIGKILL at 50 points of an apply and of
a destroy of the every-resource-kind manifest (test_reliability_support),
chosen deterministically from the journal positions. The engine's test hook
``VBDECL_TEST_CRASH_AFTER=k`` makes vbdecl SIGKILL itself right after its k-th
durable journal entry (vbdecl/engine/journal.py).

After the kill the environment's init and everything it pinned are still
there; after ``recover`` (or the next apply, which recovers first) nothing is
left behind: the host is as before the apply, or (a kill after the commit)
exactly the applied environment, which a destroy then removes completely.

All 50 points of each with VBDECL_FULL=1; every fifth point and the last otherwise (CI: 11).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from test_reliability_support import (
    FULL,
    FULL_IDS,
    FullEnv,
    assert_clean,
    check,
    cleanup_envs,  # noqa: F401  (autouse fixture)
    host,
)

# a full apply (or destroy) journals: begin, intent+done per action, commit
TOTAL = 2 + 2 * len(FULL_IDS)
N_POINTS = 50


def points(total: int = TOTAL, n: int = N_POINTS) -> list[int]:
    """n distinct journal positions 1..total, evenly spread, the first and last included."""
    pts = sorted({1 + (i * (total - 1)) // (n - 1) for i in range(n)})
    assert len(pts) == n, pts
    return pts


POINTS = points()
CHOSEN = list(range(N_POINTS)) if FULL else [*range(0, N_POINTS, 5), N_POINTS - 1]


def _entries(env: FullEnv) -> list[dict[str, object]]:
    p = env.state / "envs" / env.name / "journal.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


def test_journal_positions(tmp_path: Path) -> None:
    """The points are journal positions of a real apply and destroy of this manifest."""
    env = FullEnv(tmp_path)
    before = host()
    check(env.apply(), 0, "apply")
    n_apply = len(_entries(env))
    check(env.destroy(), 0, "destroy")
    n_destroy = len(_entries(env)) - n_apply
    assert n_apply == TOTAL and n_destroy == TOTAL, (n_apply, n_destroy)
    assert_clean(before, "apply + destroy")


@pytest.mark.parametrize("i", CHOSEN)
def test_sigkill_during_apply(tmp_path: Path, i: int) -> None:
    k = POINTS[i]
    env = FullEnv(tmp_path)
    before = host()
    out = env.apply(crash=k)
    assert out.returncode == -signal.SIGKILL, (k, out.returncode, out.stderr)
    committed = any(e.get("t") == "commit" for e in _entries(env))
    assert committed == (k == TOTAL), k
    if i % 2 == 0:
        # explicit recovery
        check(env.recover(), 0, f"recover after a kill at entry {k} of apply")
        assert not env.journal_open()
        if not committed:
            assert_clean(before, f"recover after a kill at entry {k} of apply")
            assert env.state_json() is None
            return
        state = env.state_json()
        assert state is not None and sorted(state["resources"]) == sorted(env.ids())
    else:
        # the next apply recovers first, then lands everything
        check(env.apply(), 0, f"apply after a kill at entry {k} of apply")
        state = env.state_json()
        assert state is not None and sorted(state["resources"]) == sorted(env.ids())
    check(env.destroy(), 0, "destroy")
    assert_clean(before, f"destroy after a kill at entry {k} of apply")


@pytest.mark.parametrize("i", CHOSEN)
def test_sigkill_during_destroy(tmp_path: Path, i: int) -> None:
    k = POINTS[i]
    env = FullEnv(tmp_path)
    before = host()
    check(env.apply(), 0, "apply")
    out = env.destroy(crash=k)
    assert out.returncode == -signal.SIGKILL, (k, out.returncode, out.stderr)
    if i % 2 == 0:
        check(env.recover(), 0, f"recover after a kill at entry {k} of destroy")
    else:
        # destroy again: it recovers first (rolls the destroy forward), which is the destroy
        # asked for; only a kill after the commit left nothing to finish
        was_open = env.journal_open()
        out = env.destroy()
        assert "Traceback" not in out.stderr
        if was_open:
            check(out, 0, f"destroy after a kill at entry {k} of destroy")
            assert "finished the interrupted destroy" in out.stdout, out.stdout
        else:
            assert out.returncode == 1 and "' was destroyed" in out.stderr, out.stderr
    assert not env.journal_open()
    assert_clean(before, f"after a kill at entry {k} of destroy")
    assert env.state_json() is None

"""Error paths of the engine that must not keep an environment locked."""

from __future__ import annotations

from pathlib import Path

import pytest

from vbdecl.engine import paths
from vbdecl.engine.executor import Engine
from vbdecl.errors import StateError


def test_corrupt_state_is_reported_and_the_lock_released(tmp_path: Path) -> None:
    state_dir = str(tmp_path / "state")
    engine = Engine(state_dir)
    env = Path(paths.env_dir("broken", state_dir))
    env.mkdir(parents=True)
    (env / "state.json").write_text("{ not json")
    for _ in range(2):   # the second attempt must see the same error, not "locked by ourselves"
        with pytest.raises(StateError), engine.session("broken"):
            pass

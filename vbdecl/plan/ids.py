"""Action ids (docs/plan-format.md): one rule, shared by the compiler and by the
runtime's error messages. Standard library only: the run path imports it."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any


#: filesystem entry type -> action id prefix (kind is always ``fs.<type>``)
FS_ID_PREFIX: dict[str, str] = {
    "bind": "mount", "ro-bind": "mount", "dev-bind": "mount",
    "proc": "mount", "dev": "mount", "mqueue": "mount", "tmpfs": "mount",
    "overlay": "mount", "tmp-overlay": "mount", "ro-overlay": "mount",
    "bind-data": "mount",
    "dir": "dir", "file": "file", "symlink": "symlink", "chmod": "chmod",
    "remount-ro": "remount-ro",
}


def numbered(ids: Iterable[str]) -> list[str]:
    """The ids, with a repeat of an id numbered ``#2``, ``#3``, ... in order."""
    seen: dict[str, int] = {}
    out = []
    for id_ in ids:
        n = seen[id_] = seen.get(id_, 0) + 1
        out.append(id_ if n == 1 else f"{id_}#{n}")
    return out


def fs_action_ids(entries: list[dict[str, Any]]) -> list[str]:
    """The action id of each filesystem entry, in manifest order."""
    return numbered(f"{FS_ID_PREFIX.get(e['type'], e['type'])}[{e['target']}]" for e in entries)

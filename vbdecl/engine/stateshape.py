"""What a state.json must hold before anything reads it (store.load, and exec's
own lean reader): a file edited by hand or by another program is refused whole,
with what is wrong, rather than failing later where a key is missing."""

from __future__ import annotations

from typing import Any

from vbdecl.errors import StateError

FORMAT = 1
# key: the types its value may have (an instance is None only in a state made for
# a comparison, vbdecl.plan.diff.state_of)
_KEYS: dict[str, tuple[type, ...]] = {"name": (str,), "instance": (str, type(None)), "serial": (int,),
                                      "plan": (dict,), "resources": (dict,)}


def check(data: Any, path: str) -> dict[str, Any]:
    """``data`` (a parsed state.json at ``path``), or StateError saying what is wrong."""
    if not isinstance(data, dict):
        raise _damaged(path, f"it holds {type(data).__name__}, not an object")
    if data.get("format") != FORMAT:
        raise StateError(f"{path}: unknown state format {data.get('format')!r}",
                         hint="this state was written by another vbdecl version")
    for key, kinds in _KEYS.items():
        if key not in data or not isinstance(data[key], kinds) or isinstance(data[key], bool):
            raise _damaged(path, f"its {key!r} is missing or not {_name(kinds[0])}")
    instance = data["instance"]
    if instance is not None and not _instance_id(instance):
        # (it names cgroups, chains and the runtime directory: never a path)
        raise _damaged(path, f"its instance {instance!r} is not an instance id (vb- and letters or digits)")
    for rid, res in data["resources"].items():
        if not isinstance(res, dict) or not isinstance(res.get("kind"), str) \
                or not isinstance(res.get("params") or {}, dict):
            raise _damaged(path, f"its resource {rid!r} is not an object with a kind and params")
    actions = data["plan"].get("actions", [])
    if not isinstance(actions, list) or not all(isinstance(a, dict) and isinstance(a.get("id"), str)
                                                for a in actions):
        raise _damaged(path, "its plan's actions are not a list of actions with ids")
    return data


_INSTANCE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")


def _instance_id(text: str) -> bool:
    """``vb-`` and 1-32 lowercase letters or digits (store.new_instance_id: 8 hex digits)."""
    rest = text[3:]
    return text.startswith("vb-") and 0 < len(rest) <= 32 and _INSTANCE_CHARS.issuperset(rest)


def _damaged(path: str, why: str) -> StateError:
    return StateError(f"{path} is damaged: {why}",
                      hint="it was changed by something other than vbdecl: restore it (from git, a "
                           "backup, or the environment's last revision file next to it), or run "
                           "vbdecl recover NAME if a command was cut short")


def _name(kind: type) -> str:
    return {str: "a string", int: "a number", dict: "an object"}.get(kind, kind.__name__)

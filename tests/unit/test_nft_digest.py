"""The digest of an nftables chain that NAT and guard records keep (ops.nat.rules_sha256),
and how their probes use it, on listings as libnftables gives them."""

from __future__ import annotations

from typing import Any

import pytest

from vbdecl.ops import guard
from vbdecl.ops.base import Context
from vbdecl.ops.nat import rules_sha256

CHAIN = "vb-0000abcd-guard"


def _rule(chain: str, handle: int, right: str) -> dict[str, Any]:
    return {"rule": {"family": "bridge", "table": "vbdecl", "chain": chain, "handle": handle,
                     "expr": [{"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                                         "right": right}}, {"drop": None}]}}


def _listing(right: str = "10.0.0.2", handle: int = 7) -> list[dict[str, Any]]:
    return [{"table": {"family": "bridge", "name": "vbdecl"}},
            {"map": {"name": "ports", "elem": [["vbport0", {"goto": {"target": CHAIN}}]]}},
            {"chain": {"name": "prerouting"}},
            _rule("prerouting", 1, "x"), _rule("prerouting", 2, "y"),
            {"chain": {"name": CHAIN}}, _rule(CHAIN, handle, right)]


def test_the_digest_is_of_the_rules_in_order_without_their_handles() -> None:
    assert rules_sha256(_listing(handle=7), CHAIN) == rules_sha256(_listing(handle=99), CHAIN)
    assert rules_sha256(_listing(), CHAIN) != rules_sha256(_listing("0.0.0.0/0"), CHAIN)
    assert rules_sha256(_listing(), CHAIN) != rules_sha256(_listing(), "prerouting")


class _Listed:
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def list_table(self, family: str, name: str) -> list[dict[str, Any]]:
        return self.items


def test_a_guard_record_of_a_vbdecl_before_the_digest_is_judged_by_its_count(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A review: the guard's probe gave every record the digest, so a record from before it
    (none) was drift on every plan after an upgrade, and apply remade each guard."""
    ctx = Context(name="web", instance="vb-0000abcd", state_dir="/nonexistent", runtime_dir="/nonexistent")
    listed = _Listed(_listing())
    monkeypatch.setattr(guard, "_nft", lambda ctx: listed)
    old = {"chain": CHAIN, "port": "vbport0", "rules": 1}
    assert guard.Guard().probe(ctx, {"bridge": "br0"}, old) == old
    new = dict(old, rules_sha256=rules_sha256(listed.items, CHAIN))
    assert guard.Guard().probe(ctx, {"bridge": "br0"}, new) == new
    listed.items = _listing("0.0.0.0/0")        # replaced by a weaker rule
    assert guard.Guard().probe(ctx, {"bridge": "br0"}, old) == old
    found = guard.Guard().probe(ctx, {"bridge": "br0"}, new)
    assert found is not None and found["rules_sha256"] != new["rules_sha256"]

"""Sessions, liveness and the stable registration order used by `--shard auto/N`."""

from __future__ import annotations

import pytest

from lola_deft.server.registry import AgentRegistry, UnknownSession


def test_re_registration_replaces_the_session_and_keeps_the_index() -> None:
    registry = AgentRegistry(liveness_timeout_s=60)
    first = registry.register("a", "hw", "1", [])
    second = registry.register("b", "hw", "1", [])
    again = registry.register("a", "hw", "1", [])
    assert (first.index, second.index, again.index) == (0, 1, 0)
    with pytest.raises(UnknownSession):
        registry.touch(first.session)
    assert registry.touch(again.session).device_id == "a"
    assert {r.device_id for r in registry.live()} == {"a", "b"}


def test_silent_agents_are_not_live() -> None:
    registry = AgentRegistry(liveness_timeout_s=0.0)
    registry.register("a", "hw", "1", [])
    assert registry.live() == []

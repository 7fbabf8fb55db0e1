"""Sessions, liveness, forgetting and the shard index used by `--shard auto/N`."""

from __future__ import annotations

import pytest

from lola_deft.server.errors import AlreadyRegistered, Forbidden, TooLarge, UnknownSession
from lola_deft.server.messages import Registration
from lola_deft.server.registry import AgentRegistry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def joining(device_id: str) -> Registration:
    return Registration(device_id, "hw", "1", (), "fp")


def test_a_proven_re_registration_replaces_the_session_and_keeps_the_index() -> None:
    registry = AgentRegistry(liveness_timeout_s=60)
    first = registry.register(joining("a"), identity="cert-a")
    second = registry.register(joining("b"))
    again = registry.register(joining("a"), identity="cert-a")  # the same certificate
    assert (first.index, second.index, again.index) == (0, 1, 0)
    with pytest.raises(UnknownSession):
        registry.touch(first.session)
    assert registry.touch(again.session, "cert-a").device_id == "a"
    assert {r.device_id for r in registry.live()} == {"a", "b"}


def test_an_unproven_claim_on_a_live_id_is_refused_never_an_eviction() -> None:
    clock = Clock()
    registry = AgentRegistry(liveness_timeout_s=10, clock=clock)
    owner = registry.register(joining("a"), identity="cert-a")
    with pytest.raises(AlreadyRegistered):
        registry.register(joining("a"))
    with pytest.raises(AlreadyRegistered):
        registry.register(joining("a"), identity="another certificate for a")
    assert registry.touch(owner.session, "cert-a").device_id == "a"  # the owner keeps it
    with pytest.raises(Forbidden, match="another certificate"):
        registry.touch(owner.session, "another certificate for a")
    clock.now += 11  # the owner went silent: the id may be taken again (a restarted agent)
    assert registry.register(joining("a")).session != owner.session


def test_silent_agents_are_not_live_then_forgotten() -> None:
    clock = Clock()
    registry = AgentRegistry(liveness_timeout_s=10, forget_after_s=100, clock=clock)
    a = registry.register(joining("a"))
    registry.register(joining("b"))
    clock.now += 50
    registry.touch(a.session)
    assert [r.device_id for r in registry.live()] == ["a"] and len(registry) == 2
    clock.now += 60  # b silent for 110 s, a for 60 s
    assert registry.forget_departed() == ["b"]
    assert len(registry) == 1 and not registry.is_live("b")
    # A newcomer takes the departed device's shard index; the remembered one keeps its own.
    assert registry.register(joining("c")).index == 1
    assert registry.register(joining("a")).index == 0


def test_churn_does_not_grow_the_registry_and_a_full_one_refuses_newcomers() -> None:
    clock = Clock()
    registry = AgentRegistry(liveness_timeout_s=1, forget_after_s=5, max_devices=100, clock=clock)
    for i in range(4000):
        record = registry.register(joining(f"device-{i}"))
        clock.now += 0.1
    assert len(registry) <= 60 and record.index < 60  # forget_after_s plus a sweep's slack
    clock.now += 10  # everyone so far has left
    for i in range(100):
        registry.register(joining(f"burst-{i}"), identity=f"cert-{i}")
    with pytest.raises(TooLarge, match="registry full: 100 devices"):
        registry.register(joining("one-too-many"))
    registry.register(joining("burst-0"), identity="cert-0")  # a known device may return

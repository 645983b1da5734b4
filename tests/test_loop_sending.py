"""The shared actor loop lets an actor act on a turn's decisions before they go to the hub
(`Actor.sending`): the orchestrator hands a task to the workers while the hub logs its
dispatch (DESIGN 4, Dispatch), not a turn later."""

from __future__ import annotations

import threading
from typing import Any

from actors.shared.loop import Actor, Loop, LoopConfig
from actors.shared.now import Now
from bus.endpoints import Endpoints
from bus.events import MetricRecorded
from bus.schema import Event


class _Decider(Actor):
    """Decides one metric a turn, three times, and notes what the hub held when `sending`
    came for each."""

    name = "sending-test"
    lock = "none"
    types = frozenset({"MetricRecorded"})

    def __init__(self) -> None:
        self.decided = 0
        self.sent_ids: list[str] = []
        self.at_sending: list[tuple[list[str], int]] = []  # (sent so far, hub head then)
        self.folded: list[str] = []
        self.all_back = threading.Event()  # the three decisions came back from the hub

    def apply(self, record: Any, fields: dict[str, Any], now: Now) -> None:
        self.folded.append(fields["id"])
        if len(self.folded) == 3:
            self.all_back.set()

    def decide(self, now: Now) -> list[Event]:
        if self.decided >= 3 or len(self.folded) < self.decided:
            return []
        self.decided += 1
        return [MetricRecorded(name="turns", value=float(self.decided))]

    def sent(self, event: Event, payload: bytes) -> None:
        self.sent_ids.append(event.id)

    def sending(self, now: Now) -> None:
        self.at_sending.append((list(self.sent_ids), self.loop.client.head()))

    def next_due(self, now: Now) -> float | None:
        return now.mono + 0.01


def test_an_actor_acts_on_its_decisions_before_they_go_to_the_hub(hub, client):
    # given an actor loop on a running hub, deciding one event a turn
    actor = _Decider()
    loop = Loop(actor, LoopConfig(data_dir=hub.data_dir, endpoints=Endpoints.local(hub.data_dir)))
    runner = threading.Thread(target=loop.run, daemon=True)
    runner.start()
    try:
        assert actor.all_back.wait(20), f"folded {actor.folded}"
    finally:
        loop.stop()
        runner.join(10)
    assert not runner.is_alive()
    # then `sending` came once per deciding turn, after the turn's events were added and
    # while the hub did not hold them yet
    assert len(actor.at_sending) == 3
    for n, (sent, head) in enumerate(actor.at_sending, start=1):
        assert sent == actor.sent_ids[:n]
        assert head == n - 1
    # and each went to the hub then, once, in order
    assert actor.folded == actor.sent_ids
    assert client.head() == 3

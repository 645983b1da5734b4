"""The actors' outbox: dedup by id, give-up of what is not back, one send per turn, size guard."""

from __future__ import annotations

import pytest

from actors.shared.outbox import Outbox
from bus.errors import BusError
from bus.events import ExecutionFailed, MetricRecorded
from bus.schema import decode, encode


class Sink:
    """Collects what a flush publishes; fails on demand, as a hub that is away does."""

    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []
        self.fail = False

    def publish_many(self, events: list[bytes]) -> None:
        if self.fail:
            raise BusError("the hub is away")
        self.sent.append(list(events))


def metric(event_id: str, labels: dict[str, str] | None = None) -> MetricRecorded:
    return MetricRecorded(id=event_id, name="rows", value=1.0, labels=labels or {})


def test_a_decision_on_its_way_is_sent_once_and_all_of_a_turn_go_as_one_message():
    outbox, sink = Outbox("t"), Sink()
    first = metric("a")
    assert outbox.add(first, 0.0) == encode(first)  # its bytes, checked once
    assert not outbox.add(metric("a"), 0.1)  # on its way: dropped
    assert outbox.add(metric("b"), 0.1)
    assert outbox.flush(sink) == []
    assert [[decode(p).id for p in message] for message in sink.sent] == [["a", "b"]]


def test_what_is_not_back_in_time_is_given_up_oldest_first_and_may_go_again():
    outbox = Outbox("t", resend_after_s=5.0)
    outbox.add(metric("a"), 0.0)
    outbox.add(metric("b"), 3.0)
    outbox.add(metric("c"), 4.0)
    assert outbox.back("c")
    assert outbox.expire(5.5) == ["a"]
    assert outbox.expire(9.0) == ["b"]
    assert outbox.add(metric("a"), 9.0)  # given up: decided again, it goes again


def test_a_failed_send_gives_its_events_up():
    outbox, sink = Outbox("t"), Sink()
    outbox.add(metric("a"), 0.0)
    sink.fail = True
    assert outbox.flush(sink) == ["a"]
    assert outbox.add(metric("a"), 0.1)


def test_untracked_events_are_not_waited_for():
    outbox = Outbox("t")
    outbox.add(metric("a"), 0.0, track=False)
    assert outbox.on_the_way == {}
    assert outbox.add(metric("a"), 0.0, track=False)


def test_an_event_over_the_limit_is_replaced_or_dropped():
    big = metric("big", {"k": "x" * 2000})
    instead = ExecutionFailed(id="f", execution_id="e", error="too big")
    outbox, sink = Outbox("t", max_bytes=1000, too_big=lambda event, size: instead), Sink()
    assert outbox.add(big, 0.0) is None  # queued, but not as its own bytes
    assert outbox.pending() == 1
    outbox.flush(sink)
    assert [decode(p).id for p in sink.sent[0]] == ["f"]
    dropping = Outbox("t", max_bytes=1000)
    assert not dropping.add(big, 0.0)
    assert dropping.pending() == 0


@pytest.mark.parametrize(
    "event",
    [
        MetricRecorded(id="x", name=5, value=1.0),  # type: ignore[arg-type]
        MetricRecorded(id="y", name="rows", value=1.0, labels={"a": object()}),  # type: ignore[dict-item]
    ],
)
def test_an_event_the_hub_would_refuse_is_logged_and_dropped_not_raised(event):
    outbox = Outbox("t")
    assert not outbox.add(event, 0.0)
    assert outbox.pending() == 0

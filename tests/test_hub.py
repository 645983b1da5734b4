"""The hub as a real process: durable appends, in-order subscriptions, crashes and garbage."""

from __future__ import annotations

import os
import threading
import time

import msgpack
import pytest
import zmq

from actors.worker.lane import Lane, LaneArgs
from bus.client import Client, Record
from bus.errors import EventRefusedError
from bus.events import ExecutionQueued, MetricRecorded, StageProgress
from bus.markers import Markers
from bus.protocol import MAX_MESSAGE_BYTES
from bus.schema import decode, encode
from bus.wire import type_marker_topic
from store.reader import LogReader
from store.verify import verify
from tests.conftest import HubProcess, run_porch


def metric(i: int) -> MetricRecorded:
    return MetricRecorded(name="test", value=float(i))


def progress(i: int) -> StageProgress:
    return StageProgress(execution_id="e", stage="s", worker="w", fraction=i / 1000)


def collect(sub, count: int, timeout_s: float = 20.0) -> list[Record]:
    got: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        got.extend(sub.receive(timeout_ms=200))
    return got


def test_append_is_acknowledged_with_contiguous_seqs(client):
    seqs = [client.append(metric(i)) for i in range(20)]
    assert seqs == list(range(1, 21))
    assert client.head() == 20


def test_duplicate_append_is_written_once(client):
    event = metric(1)
    assert client.append(event) == client.append(event)
    assert client.head() == 1
    assert client.stats()["duplicates"] == 1


def test_a_duplicate_resent_after_a_hub_restart_is_still_written_once(hub, client):
    # given events in the log, the one resent spread over several small segments' worth
    events = [metric(i) for i in range(50)]
    seqs = [client.append(event) for event in events]
    # when the hub is killed and restarted, and a client resends what it sent before
    hub.kill()
    hub.start()
    with Client.local(hub.data_dir, timeout_ms=20_000) as again:
        resent = [again.append(event) for event in (events[0], events[25], events[-1])]
        # then each is a duplicate of what the log holds, at its seq
        assert resent == [seqs[0], seqs[25], seqs[-1]]
        assert again.head() == 50
        assert again.stats()["duplicates"] == 3


def test_refused_append_names_the_reason(client):
    bad = msgpack.packb(
        {
            "type": "MetricRecorded",
            "v": 1,
            "id": "x",
            "ts": 1.0,
            "src": "t",
            "name": 5,
            "value": 1.0,
        }
    )
    with pytest.raises(EventRefusedError, match="field 'name' must be str, got int"):
        client.append(bad)


def test_an_append_with_a_next_event_writes_both_in_order_or_neither(client, tmp_path):
    # given a runner's lane to the hub (its completion, then the dispatch it goes on to)
    lane = Lane(
        LaneArgs(
            tasks=f"ipc://{tmp_path}/no-tasks",
            ingest=client.endpoints.ingest,
            worker="w1",
            request=client.endpoints.request,
        )
    )
    try:
        # when it appends an event with the next one
        assert lane.append(metric(1), encode(metric(2)))
        # then both are in the log, one right after the other, durable once acknowledged
        assert [r.fields()["value"] for r in client.read(1)] == [1.0, 2.0]
    finally:
        lane.close()
        lane.pull.close(linger=0)
    # and when the first is refused, the next is not written either
    bad = msgpack.packb({"type": "MetricRecorded", "v": 1, "id": "x", "ts": 1.0, "src": "t"})
    with client._ctx.socket(zmq.DEALER) as req:
        req.setsockopt(zmq.LINGER, 0)
        req.connect(client.endpoints.request)
        req.send_multipart([b"", msgpack.packb({"op": "append", "event": bad, "rid": 7,
                                                "next": encode(metric(3))})])  # fmt: skip
        assert req.poll(10_000)
        reply = msgpack.unpackb(req.recv_multipart()[-1])
    assert (reply["rid"], reply["ok"]) == (7, False)
    assert "missing required field" in reply["error"]
    assert client.head() == 2


def wait_for_head(client, head: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while client.head() < head:
        assert time.monotonic() < deadline, f"head stuck at {client.head()}, waited for {head}"
        time.sleep(0.01)


def test_published_events_are_read_back_in_order(client):
    # publish and append travel different sockets: each keeps its own order
    for i in range(300):
        client.publish(metric(i))
    wait_for_head(client, 300)
    values = [r.event().value for r in client.read()]
    assert values == [float(i) for i in range(300)]
    assert [r.seq for r in client.read(100, 110)] == list(range(100, 111))
    assert {r.type for r in client.read()} == {"MetricRecorded"}


def test_late_subscriber_receives_history_then_live_once_in_order(client, hub):
    # given: history exists before the subscriber joins
    for i in range(501):
        client.publish(metric(i))
    wait_for_head(client, 501)
    # when: it joins from seq 1 while another program keeps publishing
    with Client.local(hub.data_dir) as reader, reader.subscribe(1) as sub:
        producer = threading.Thread(
            target=lambda: [client.publish(metric(i)) for i in range(501, 1001)]
        )
        producer.start()
        got = collect(sub, 1001)
        producer.join()
    # then
    assert [r.seq for r in got] == list(range(1, 1002))


@pytest.mark.parametrize("batch_markers", [True, False])
def test_filtered_subscriber_misses_nothing(client, hub, batch_markers):
    with (
        Client.local(hub.data_dir) as reader,
        reader.subscribe(1, types=["StageProgress"], batch_markers=batch_markers) as sub,
    ):
        for i in range(400):
            client.publish(metric(i) if i % 3 else progress(i))
        got = collect(sub, 134)
        assert collect(sub, 1, timeout_s=1.5) == []  # and nothing twice
    assert len(got) == 134
    assert all(r.type == "StageProgress" for r in got)
    assert [r.seq for r in got] == sorted(r.seq for r in got)


def test_a_subscriber_of_rare_types_is_not_woken_by_every_batch(client, hub):
    # given a subscription to a type nobody publishes, without batch markers
    with (
        Client.local(hub.data_dir) as reader,
        reader.subscribe(None, types=["StageProgress"], batch_markers=False) as sub,
    ):
        # when hundreds of other events are appended, one by one
        for i in range(300):
            client.append(metric(i))
        # then its socket got the once-a-second idle markers, not one marker per batch
        arrived = 0
        while sub.socket.poll(0):
            sub.socket.recv_multipart()
            arrived += 1
    assert arrived < 30


def test_batches_no_filtered_subscriber_follows_share_the_next_marker(client, hub):
    # given a filtered subscription with batch markers, and a socket that counts markers
    with (
        Client.local(hub.data_dir) as reader,
        reader.subscribe(None, types=["StageProgress"]) as sub,
        zmq.Context() as ctx,
        ctx.socket(zmq.SUB) as counter,
    ):
        counter.setsockopt(zmq.SUBSCRIBE, b"\x00")
        counter.connect(reader.endpoints.publish)
        assert counter.poll(5000)  # the hub's idle marker: the subscriptions are in effect
        counter.recv_multipart()
        # when 300 batches of a type it does not follow are appended, then one of its type
        for i in range(300):
            client.append(metric(i))
        last = client.append(progress(1))
        # then it gets that one event, in order
        got = collect(sub, 1)
        assert [(r.seq, r.type) for r in got] == [(last, "StageProgress")]
        assert sub.position == last
        # and the batches it does not follow had no marker each (a few idle ones at most)
        markers = []
        while counter.poll(500):
            markers.append(counter.recv_multipart())
    assert 1 <= len(markers) < 30


def test_a_subscriber_is_not_woken_by_batches_only_others_follow(client, hub):
    # given a subscription with batch markers, and another one following other events
    with (
        Client.local(hub.data_dir) as reader,
        reader.subscribe(None, types=["StageProgress"]) as sub,
        reader.subscribe(None, types=["MetricRecorded"]) as other,
    ):
        assert sub.socket.poll(5000)  # the hub's idle marker: the subscriptions are in effect
        sub.receive(0)
        # when hundreds of batches the other follows are appended, one by one
        for i in range(300):
            client.append(metric(i))
        assert len(collect(other, 300)) == 300
        # then the first heard of them only through the idle marker, once a second
        arrived = 0
        while sub.socket.poll(0):
            sub.socket.recv_multipart()
            arrived += 1
        assert arrived < 30
        # and an event of its own still comes at once, in order, nothing missed
        last = client.append(progress(1))
        got = collect(sub, 1)
        assert [(r.seq, r.type) for r in got] == [(last, "StageProgress")]
        assert sub.position == last


def test_subscribers_of_interleaved_types_each_get_theirs_once_in_order(client, hub):
    # given subscribers of different, overlapping sets of types, all with batch markers
    kinds = [metric, progress, lambda i: ExecutionQueued(execution_id=f"e{i}")]
    with Client.local(hub.data_dir) as reader:
        subs = {
            ("MetricRecorded", "StageProgress"): reader.subscribe(1, types=["MetricRecorded", "StageProgress"]),
            ("StageProgress",): reader.subscribe(1, types=["StageProgress"]),
            ("ExecutionQueued",): reader.subscribe(1, types=["ExecutionQueued"]),
        }  # fmt: skip
        try:
            # when events of the three types are published in batches of every mix, while
            # they follow
            for i in range(900):
                client.publish(kinds[(i * 7 // 5) % 3](i))
            wait_for_head(client, 900)
            log = list(client.read(1))
            # then each gets every event of its types, once, in the log's order
            for types, sub in subs.items():
                want = [r.seq for r in log if r.type in types]
                got = [r.seq for r in collect(sub, len(want))]
                assert got == want, types
                assert collect(sub, 1, timeout_s=1.2) == []
        finally:
            for sub in subs.values():
                sub.close()


def test_a_filtered_subscriber_recovers_what_its_high_water_mark_dropped(client, hub):
    # given a filtered subscription whose socket holds 10 messages, and another subscriber's
    # batches between its own, while it does not read
    with (
        Client.local(hub.data_dir) as reader,
        reader.subscribe(1, types=["StageProgress"], hwm=10) as sub,
        reader.subscribe(1, types=["MetricRecorded"]) as other,
    ):
        for i in range(1500):
            client.publish(progress(i) if i % 2 else metric(i))
        wait_for_head(client, 1500)
        # then it still gets each of its 750 events once, in order
        got = collect(sub, 750)
        assert collect(other, 750)
    assert [r.seq for r in got] == list(range(2, 1501, 2))


def test_subscriber_recovers_messages_dropped_at_its_high_water_mark(client, hub):
    # given: a subscriber whose socket holds only 10 messages and does not read for a while
    with Client.local(hub.data_dir) as reader, reader.subscribe(hwm=10) as sub:
        for i in range(3001):
            client.publish(metric(i))
        wait_for_head(client, 3001)
        # when it reads at last
        got = collect(sub, 3001)
    # then nothing is lost or repeated
    assert [r.seq for r in got] == list(range(1, 3002))


@pytest.mark.parametrize("types", [None, ["MetricRecorded"]])
def test_subscriber_lives_through_a_hub_restart(hub, types):
    with (
        Client.local(hub.data_dir, timeout_ms=20_000) as producer,
        Client.local(hub.data_dir, timeout_ms=20_000) as reader,
    ):
        sub = reader.subscribe(1, types=types)
        for i in range(100):
            producer.append(metric(i))
        first = collect(sub, 100)
        # when: the hub dies and comes back, and events arrive meanwhile and after
        hub.kill()
        hub.start()
        for i in range(100, 200):
            producer.append(metric(i))
        second = collect(sub, 100)
        sub.close()
    assert [r.event().value for r in first + second] == [float(i) for i in range(200)]
    assert [r.seq for r in first + second] == list(range(1, 201))


def test_kill_under_load_loses_no_acknowledged_event(hub):
    acked: dict[str, int] = {}
    errors: list[BaseException] = []
    stop = threading.Event()

    def produce(tag: int) -> None:
        try:
            with Client.local(hub.data_dir, timeout_ms=30_000, retry_ms=500) as c:
                i = 0
                while not stop.is_set():
                    event = metric(tag * 1_000_000 + i)
                    acked[event.id] = c.append(event)
                    i += 1
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(2)]
    for t in threads:
        t.start()
    # given: load running, then SIGKILL at an arbitrary instant, twice
    for _ in range(2):
        deadline = time.monotonic() + 10
        start = len(acked)
        while len(acked) < start + 300 and time.monotonic() < deadline:
            time.sleep(0.01)
        hub.kill()
        hub.start()
    deadline = time.monotonic() + 10
    start = len(acked)
    while len(acked) < start + 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors
    hub.stop()
    # then: every acknowledged event sits in the log at the seq it was acked with
    log_dir = hub.data_dir / "log"
    report = verify(log_dir)
    assert report.ok
    assert not report.problem
    by_id = {}
    seqs = []
    for seq, payload in LogReader(log_dir).read():
        seqs.append(seq)
        by_id.setdefault(msgpack.unpackb(payload)["id"], seq)
    assert seqs == list(range(1, len(seqs) + 1))
    assert len(acked) > 600
    for event_id, seq in acked.items():
        assert by_id.get(event_id) == seq


def test_garbage_and_oversized_frames_leave_the_hub_serving(hub, client, zmq_context):
    endpoints = client.endpoints
    push = zmq_context.socket(zmq.PUSH)
    push.linger = 0
    push.connect(endpoints.ingest)
    dealer = zmq_context.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(endpoints.request)
    rng = __import__("random").Random(7)
    # when: 1,000 frames of random bytes on each socket, odd frame shapes, and oversized frames
    for _ in range(1000):
        junk = rng.randbytes(rng.randint(0, 300))
        push.send(junk)
        dealer.send_multipart([b"", junk])
    dealer.send_multipart([b"a", b"b", b"c", b""])
    push.send_multipart([b"x", b"y"])
    push.send(
        msgpack.packb(
            {
                "type": "MetricRecorded",
                "v": 1,
                "id": "i",
                "ts": 1,
                "src": "s",
                "name": "n",
                "value": "nan",
            }
        )
    )
    push.send(b"\x00" * (MAX_MESSAGE_BYTES + 10_000))
    oversized = zmq_context.socket(zmq.PUSH)
    oversized.linger = 0
    oversized.connect(endpoints.ingest)
    oversized.send(os.urandom(3 * MAX_MESSAGE_BYTES))
    # then: every bad request got an error reply
    replies = 0
    while replies < 1000 and dealer.poll(5000):
        dealer.recv_multipart()
        replies += 1
    assert replies == 1000
    # and the hub still appends, and counted what it refused
    seq = client.append(metric(1))
    assert seq == 1
    stats = client.stats()
    assert stats["malformed"] >= 1000
    assert stats["refused"]["bad request"] >= 1000
    assert hub.alive()
    assert decode(next(iter(client.read())).payload).value == 1.0
    for sock in (push, dealer, oversized):
        sock.close()


def test_sigterm_flushes_and_exits_cleanly(hub, client):
    for i in range(50):
        client.publish(metric(i))
    client.append(metric(50))
    wait_for_head(client, 51)
    assert hub.stop() == 0
    assert verify(hub.data_dir / "log").records == 51


def test_second_hub_on_the_same_data_dir_is_refused(hub):
    result = run_porch("hub", data_dir=hub.data_dir)
    assert result.returncode == 2
    assert f"already open for writing by pid {hub.proc.pid}" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_read_into_a_damaged_old_segment_is_an_error_reply_not_a_crash(data_dir):
    # given: a log of several segments whose first one is damaged
    from store.log import EventLog
    from store.segment import list_segments

    log_dir = data_dir / "log"
    with EventLog(log_dir, segment_bytes=400) as log:
        for i in range(30):
            log.append(
                [
                    msgpack.packb(
                        {
                            "type": "MetricRecorded",
                            "v": 1,
                            "id": f"i{i}",
                            "ts": 1.0,
                            "src": "t",
                            "name": "n",
                            "value": 1.0,
                        }
                    )
                ]
            )
    first = list_segments(log_dir)[0]
    raw = bytearray(first.read_bytes())
    raw[30] ^= 0xFF
    first.write_bytes(bytes(raw))
    hub = HubProcess(data_dir).start()
    try:
        with Client.local(data_dir) as client:
            # when / then
            with pytest.raises(EventRefusedError, match="corrupt log record"):
                list(client.read(1))
            assert client.append(metric(1)) == 31
            assert hub.alive()
    finally:
        hub.stop()


def test_marker_topics_of_types_not_in_the_catalogue_add_no_chain():
    # given the hub's marker state, and subscriptions to a known type and to made-up ones
    markers = Markers(head=7)
    markers.subscription(b"\x01" + type_marker_topic("StageCompleted"), head=7)
    for i in range(1000):
        markers.subscription(b"\x01" + type_marker_topic(f"NoSuchType{i}"), head=7)
    # then only the known type has a chain, so the markers every subscriber hears stay small
    assert markers.chains == {"StageCompleted": 7}
    sent = markers.after_batch({"StageCompleted": 1}, head=8)
    assert [m[0] for m in sent] == [type_marker_topic("StageCompleted")]
    assert len(sent[0][2]) < 100
    # and the last subscriber leaving a type ends its chain
    markers.subscription(b"\x00" + type_marker_topic("StageCompleted"), head=8)
    assert markers.chains == {}

"""Property-based fuzzing of what comes in over the sockets: the hub stays up and says why.

Events built to look almost right (a known type with wrong types, missing and extra fields,
huge strings, deep nesting) go to a real hub's acknowledged `append`: every one gets a reply,
either a seq (it was valid) or a one-line refusal, and the hub keeps serving and counting.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import urllib.request

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.api.system import stop_process
from actors.monitor.info import monitor_address
from bus.errors import EventRefusedError
from bus.events import MetricRecorded, StageDispatched
from bus.schema import SCHEMAS, encode
from tests.conftest import PORCH

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=True),
    st.text(max_size=50), st.binary(max_size=50),
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=40,
)


@st.composite
def near_events(draw):
    kind = draw(st.sampled_from(sorted(SCHEMAS)))
    schema = SCHEMAS[kind]
    event = {"type": kind, "v": draw(st.sampled_from([schema.v, 0, 99, "1"])), "id": draw(st.text(min_size=1, max_size=40)),
             "ts": 1.0, "src": "fuzz"}  # fmt: skip
    for name in schema.names:
        if name in event or draw(st.integers(0, 9)) == 0:
            continue  # sometimes a required field is missing
        event[name] = draw(VALUES)
    if draw(st.booleans()):
        event[draw(st.text(max_size=10))] = draw(VALUES)  # an extra field
    if draw(st.integers(0, 20)) == 0:
        event["huge"] = "x" * draw(st.integers(100_000, 2_000_000))
    if draw(st.integers(0, 20)) == 0:
        nested: object = 1
        for _ in range(draw(st.integers(50, 500))):
            nested = [nested]
        event["deep"] = nested
    return event


def pack_any(obj) -> bytes:
    try:
        return msgpack.packb(obj, use_bin_type=True)
    except (ValueError, OverflowError):  # too deep for msgpack itself: the raw bytes instead
        return b"\xdd\xff\xff\xff\xff"


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=st.lists(near_events(), min_size=1, max_size=5))
def test_almost_right_events_get_a_seq_or_a_one_line_refusal(client, events):
    for event in events:
        reason = ""
        try:
            client.append(pack_any(event))
        except EventRefusedError as exc:
            reason = str(exc) or "(empty reason)"
        assert "\n" not in reason


def test_the_hub_counts_what_it_refused_and_still_serves(client):
    refused = 0
    for payload in (b"", b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"type": "Nope"}),
                    msgpack.packb({"type": "MetricRecorded", "v": 1, "id": "x", "ts": 1, "src": "s",
                                   "name": 5, "value": 1.0})):  # fmt: skip
        try:
            client.append(payload)
        except EventRefusedError:
            refused += 1
    assert refused == 5
    stats = client.stats()
    assert sum(stats["refused"].values()) + stats["malformed"] >= 5
    assert client.append(MetricRecorded(name="still", value=1.0)) >= 1


# --- the tasks socket: a worker fed garbage by whoever binds its tasks endpoint ------------------


@st.composite
def near_tasks(draw, out_dir):
    """StageDispatched look-alikes; paths stay in the test's folder, everything else is fuzzed."""
    task = {"type": "StageDispatched", "v": 1, "id": draw(st.text(min_size=1, max_size=20)),
            "ts": 1.0, "src": "fuzz"}  # fmt: skip
    for name in SCHEMAS["StageDispatched"].names:
        if name not in task and draw(st.integers(0, 5)):
            task[name] = draw(VALUES)
    task["output"] = str(out_dir / f"out-{draw(st.integers(0, 9))}.arrow")
    task["inputs"] = [str(out_dir / "missing.parquet")]
    return task


@pytest.fixture
def lone_worker(hub, tmp_path, zmq_context):
    """A real `porch worker` whose tasks endpoint is bound by the test instead of an orchestrator."""
    from actors.worker.actor import tasks_endpoint

    tasks = zmq_context.socket(zmq.PUSH)
    tasks.setsockopt(zmq.LINGER, 0)
    tasks.setsockopt(zmq.SNDHWM, 1)  # a send waits until the worker has taken the one before
    tasks.setsockopt(zmq.SNDTIMEO, 10_000)  # a dead worker fails the test, it does not hang it
    tasks.bind(tasks_endpoint(hub.data_dir))
    log = (tmp_path / "worker.stderr").open("wb")
    proc = subprocess.Popen(
        [*PORCH, "worker", "--name", "fuzzed", "--data-dir", str(hub.data_dir)],
        stdout=log, stderr=log, cwd=tmp_path,
    )  # fmt: skip
    log.close()
    try:
        yield proc, tasks
    finally:
        stop_process(proc, 10)
        tasks.close()


def test_garbage_on_the_tasks_socket_is_refused_counted_and_the_worker_goes_on(
    lone_worker, client, tmp_path
):
    proc, tasks = lone_worker
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    payloads = st.one_of(
        st.binary(max_size=300),
        VALUES.map(pack_any),
        near_tasks(out_dir).map(pack_any),
    )

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(batch=st.lists(payloads, min_size=1, max_size=6))
    def feed(batch: list[bytes]) -> None:
        for payload in batch:
            tasks.send(payload)  # zmq.Again after 10 s: the worker stopped taking tasks
        assert proc.poll() is None, "the worker died"

    feed()
    valid = StageDispatched(
        execution_id="fuzz", stage="no_such_stage", task_id="t-1",
        inputs=[str(out_dir / "missing.parquet")], output=str(out_dir / "x.arrow"),
    )  # fmt: skip
    with client.subscribe(1, types=["WorkerHeartbeat", "StageFailed"]) as sub:
        tasks.send(encode(valid))
        failed = None
        heartbeat = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (failed is None or heartbeat is None):
            for record in sub.receive(200) + sub.take_live():
                fields = record.fields()
                if fields["type"] == "StageFailed" and fields["task_id"] == "t-1":
                    failed = fields
                elif fields["type"] == "WorkerHeartbeat" and failed is not None:
                    heartbeat = fields  # one sent after the last task was taken
    assert proc.poll() is None, "the worker died"
    assert failed is not None, "the registered-stage check gave no StageFailed"
    assert "no_such_stage" in failed["error"]
    assert heartbeat is not None
    assert heartbeat["malformed"] >= 1


def test_refusals_show_up_as_monitor_metrics(hub, client, tmp_path):

    for payload in (b"", b"\xc1", msgpack.packb({"type": "Nope"})):
        with contextlib.suppress(EventRefusedError):
            client.append(payload)
    log = (tmp_path / "monitor.stderr").open("wb")
    proc = subprocess.Popen(
        [*PORCH, "monitor", "--sampling-interval", "0.2", "--data-dir", str(hub.data_dir)],
        stdout=log, stderr=log,
    )  # fmt: skip
    log.close()
    try:
        with client.subscribe(1, types=["MetricSampled"]) as sub:
            deadline = time.monotonic() + 30
            seen: dict[str, float] = {}
            while time.monotonic() < deadline and "malformed event" not in seen:
                sub.receive(200)
                for record in sub.take_live():  # samples are live: published, not logged
                    fields = record.fields()
                    if fields["name"] == "rejected_messages_total":
                        seen[fields["labels"]["reason"]] = fields["value"]
        address = monitor_address(hub.data_dir)
        assert address is not None
        text = urllib.request.urlopen(f"{address}/metrics", timeout=5).read().decode()
    finally:
        stop_process(proc, 10)
    assert seen.get("malformed event", 0) >= 3
    assert "auth" in seen
    assert "porch_rejected_messages_total" in text
    assert not any(r.type == "MetricSampled" for r in client.read(1))  # never in the log


@st.composite
def near_requests(draw):
    """Requests to the hub's request socket: a real op with fuzzed arguments, or junk."""
    request = {"op": draw(st.sampled_from(["append", "read", "head", "stats", "nope", 5, None]))}
    for name in ("rid", "event", "from_seq", "to_seq", "types", "execution_id", "max_events"):
        if draw(st.booleans()):
            request[name] = draw(VALUES)
    return request


def test_fuzzed_requests_each_get_a_reply_and_the_hub_goes_on(hub, client, zmq_context):
    dealer = zmq_context.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(client.endpoints.request)

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(request=near_requests())
    def ask(request: dict) -> None:
        dealer.send_multipart([b"", pack_any(request)])
        assert dealer.poll(5000), f"no reply to {request!r}"
        reply = msgpack.unpackb(dealer.recv_multipart()[-1], raw=False, strict_map_key=False)
        assert isinstance(reply, dict)
        assert "ok" in reply

    try:
        ask()
    finally:
        dealer.close()
    assert hub.alive()
    assert client.append(MetricRecorded(name="after", value=1.0)) >= 1

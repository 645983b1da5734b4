"""Property-based fuzzing of what comes in over the sockets: the hub stays up and says why.

Events built to look almost right (a known type with wrong types, missing and extra fields,
huge strings, deep nesting) go to a real hub's acknowledged `append`: every one gets a reply,
either a seq (it was valid) or a one-line refusal, and the hub keeps serving and counting.
"""

from __future__ import annotations

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.errors import EventRefusedError
from bus.events import SCHEMAS, MetricRecorded

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

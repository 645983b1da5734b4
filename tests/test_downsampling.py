"""Metrics history downsampled to raw, minute and hour tiers: exact where raw, aggregates equal
to the samples they fold, bounded whatever the rate, and readable across tiers by the views."""

from __future__ import annotations

import csv
import json
import math

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.monitor.alerting import AlertEngine, check_rule
from actors.read import monitoring as views
from actors.read.monitoring import quantile
from bus.events import AlertRuleAdded
from bus.schema import to_map
from store.projections import alerts as alert_folds
from store.projections import metrics as folds
from store.projections.metrics import HOUR_S, MINUTE_S, MetricsState, Series, record

T0 = 1_800_000_000.0
DAY = 86400.0


def fed(state: MetricsState, samples, name="x", labels=()) -> Series:
    for t, v in samples:
        record(state, name, labels, t, v)
    return state.get(name, labels)


def aggregate(samples):
    """What a bucket of these samples must hold: count, min, max, last (newest ts, then the
    later one), first and last ts; and the sum, compared approximately."""
    count = len(samples)
    newest = max(range(count), key=lambda i: (samples[i][0], i))
    return (count, min(v for _, v in samples), max(v for _, v in samples), samples[newest][1],
            min(t for t, _ in samples), max(t for t, _ in samples))  # fmt: skip


def held(b: folds.Bucket):
    return (b.count, b.min, b.max, b.last, b.first_ts, b.last_ts)


def minute(t: float) -> float:
    return t - t % MINUTE_S


def hour(t: float) -> float:
    return t - t % HOUR_S


def through_codec(state: MetricsState) -> MetricsState:
    body = msgpack.packb(folds.CODEC.dump(state), use_bin_type=True)
    return folds.CODEC.load(msgpack.unpackb(body, strict_map_key=False))


def dumped(state: MetricsState):
    return msgpack.packb(folds.CODEC.dump(state), use_bin_type=True)


# --- the tiers, as tables -----------------------------------------------------------------------


def test_the_last_hour_is_raw_and_exact_and_older_samples_are_minute_buckets():
    # given three hours of one sample a second
    samples = [(T0 + i, float(i % 17)) for i in range(3 * 3600)]
    state = MetricsState()
    # when they are folded
    series = fed(state, samples)
    # then every sample of the last hour is raw, as it came
    now = samples[-1][0]
    recent = [s for s in samples if s[0] >= now - state.raw_window_s]
    raw = list(series.samples)
    assert raw[-len(recent) :] == recent
    assert raw[0][0] >= now - state.raw_window_s - folds.ROLL_SLACK_S
    assert (series.last, series.last_ts, series.count) == (samples[-1][1], now, len(samples))
    # and the older ones are whole minutes, each the aggregate of its samples
    older = samples[: len(samples) - len(raw)]
    assert [b.start for b in series.minutes] == sorted({minute(t) for t, _ in older})
    for b in series.minutes:
        mine = [s for s in older if minute(s[0]) == b.start]
        assert held(b) == aggregate(mine)
        assert b.sum == pytest.approx(sum(v for _, v in mine))
    assert not series.hours


def test_minutes_older_than_a_day_become_hours_and_hours_go_with_the_retention():
    # given a sample every 10 s for 30 hours, with a 27-hour retention
    samples = [(T0 + 10 * i, float(i % 101)) for i in range(30 * 360)]
    state = MetricsState(retention_s=27 * 3600.0)
    series = fed(state, samples)
    now = samples[-1][0]
    # then minutes span the last day, hours the time before, back to the retention (judged
    # when samples roll: up to ROLL_SLACK_S late)
    assert series.minutes[0].last_ts >= now - folds.MINUTE_WINDOW_S - folds.ROLL_SLACK_S
    assert len(series.minutes) <= folds.MAX_MINUTE_BUCKETS
    assert [b.start for b in series.hours] == sorted({b.start for b in series.hours})
    assert series.hours[0].last_ts >= now - state.retention_s
    assert series.hours[-1].start < series.minutes[0].start
    in_minutes = {b.start for b in series.minutes}
    for b in series.hours:
        mine = [s for s in samples if hour(s[0]) == b.start and minute(s[0]) not in in_minutes]
        assert held(b) == aggregate(mine)
        assert b.sum == pytest.approx(sum(v for _, v in mine))
    # and the samples older than the retention (at an hour's grain) are gone
    kept = sum(b.count for b in (*series.hours, *series.minutes)) + len(series.raw_ts)
    assert kept == sum(1 for t, _ in samples if hour(t) >= series.hours[0].start)


def test_a_busy_series_keeps_at_most_raw_max_samples_raw_and_rolls_the_oldest_first():
    # given 50 samples a second with a cap of 100 raw ones
    state = MetricsState(raw_max_samples=100)
    samples = [(T0 + i / 50, float(i)) for i in range(1000)]
    # when folded, then the newest are raw and the rest are counted in minutes
    series = fed(state, samples)
    assert folds.raw_low_water(state) <= len(series.raw_ts) <= 100
    assert list(series.samples) == samples[-len(series.raw_ts) :]
    assert sum(b.count for b in series.minutes) + len(series.raw_ts) == 1000


def test_an_idle_series_ages_with_the_newest_event_and_goes_after_the_retention():
    state = MetricsState(retention_s=30 * 3600.0)
    fed(state, [(T0 + i, 1.0) for i in range(600)], name="idle")
    # a busy series moves the fold's time on; the sweep ages every series
    seen = []
    for half_hour in range(1, 70):
        folds.observe({"type": "MetricSampled", "ts": T0 + half_hour * 1800.0, "name": "busy",
                       "value": 1.0, "labels": {}}, state)  # fmt: skip
        idle = state.get("idle")
        if idle is not None:
            seen.append((half_hour, len(idle.raw_ts), len(idle.minutes), len(idle.hours)))
    # then its raw samples became minutes, the minutes an hour, and the hour went
    tiers = {(bool(raw), bool(minutes), bool(hours)) for _, raw, minutes, hours in seen}
    assert tiers == {(True, False, False), (False, True, False), (False, False, True)}
    assert 30 * 3600 <= seen[-1][0] * 1800 <= 32 * 3600  # swept a twentieth of it after
    assert state.get("idle") is None
    assert state.get("busy") is not None


def test_the_raw_window_setting_is_checked():
    with pytest.raises(ValueError, match="raw_window_s -1"):
        MetricsState(raw_window_s=-1)
    with pytest.raises(ValueError, match="raw_max_samples 0"):
        MetricsState(raw_max_samples=0)


def test_memory_is_bounded_at_100_samples_a_second_for_30_hours():
    # given one series fed 100 samples a second for 30 simulated hours (10.8 M samples)
    state = MetricsState()
    most_raw = most_minutes = most_hours = 0
    labels = (("host", "h"),)
    for hour_ in range(30):
        base = T0 + hour_ * 3600.0
        for i in range(360_000):
            record(state, "load", labels, base + i / 100, float(i % 1000))
            if i % 60_000 == 0:
                state.changed.clear()
        series = state.get("load", labels)
        most_raw = max(most_raw, len(series.raw_ts))
        most_minutes = max(most_minutes, len(series.minutes))
        most_hours = max(most_hours, len(series.hours))
    # then it never held more than the caps
    assert most_raw <= state.raw_max_samples
    assert most_minutes <= folds.MAX_MINUTE_BUCKETS
    assert most_hours <= state.retention_s // HOUR_S + 2
    assert series.count == 30 * 360_000
    assert (series.last, series.last_ts) == (999.0, T0 + 30 * 3600 - 0.01)


# --- properties ---------------------------------------------------------------------------------

# mostly seconds apart, with jumps of hours: raw, minutes and hours all get samples
gaps = st.one_of(st.floats(0.0, 90.0), st.floats(0.0, 90.0), st.floats(3000.0, 30000.0))
values = st.floats(-1e6, 1e6, allow_nan=False)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stream=st.lists(st.tuples(gaps, values), min_size=1, max_size=500),
    raw_window=st.sampled_from([0.0, 30.0, 600.0, 3600.0]),
    cap=st.integers(1, 60),
)
def test_each_sample_is_in_one_tier_and_each_bucket_is_the_aggregate_of_its_samples(
    stream, raw_window, cap
):
    # given samples in time order (ties too), nothing past the retention
    state = MetricsState(retention_s=100 * DAY, raw_window_s=raw_window, raw_max_samples=cap)
    samples, t = [], T0
    for gap, value in stream:
        t += gap
        samples.append((t, value))
    series = fed(state, samples)
    # then the raw samples are the newest ones, as they came, within the window and the cap
    raw = list(series.samples)
    assert raw == samples[len(samples) - len(raw) :]
    assert len(raw) <= cap
    recent = sum(1 for s in samples if s[0] >= t - raw_window)
    assert len(raw) >= min(recent, folds.raw_low_water(state))
    # and every older sample is in the one minute or hour bucket it falls in
    older = samples[: len(samples) - len(raw)]
    in_minutes = {b.start for b in series.minutes}
    for b in series.minutes:
        mine = [s for s in older if minute(s[0]) == b.start]
        assert held(b) == aggregate(mine)
        assert b.sum == pytest.approx(math.fsum(v for _, v in mine), rel=1e-9, abs=1e-3)
    for b in series.hours:
        mine = [s for s in older if hour(s[0]) == b.start and minute(s[0]) not in in_minutes]
        assert held(b) == aggregate(mine)
        assert b.sum == pytest.approx(math.fsum(v for _, v in mine), rel=1e-9, abs=1e-3)
    assert sum(b.count for b in (*series.hours, *series.minutes)) == len(older)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stream=st.lists(
        st.tuples(st.one_of(st.floats(-900.0, 900.0), gaps), values), min_size=1, max_size=400
    ),
    cap=st.integers(1, 40),
)
def test_late_samples_land_in_their_own_bucket_and_nothing_is_lost(stream, cap):
    # given timestamps that go back now and then (skewed clocks)
    state = MetricsState(retention_s=100 * DAY, raw_window_s=300.0, raw_max_samples=cap)
    samples, t = [], T0
    for step, value in stream:
        t += step
        samples.append((t, value))
    series = fed(state, samples)
    # then buckets are in order, each within its minute or hour, and the totals add up
    for tier, width in ((series.minutes, MINUTE_S), (series.hours, HOUR_S)):
        starts = [b.start for b in tier]
        assert starts == sorted(set(starts))
        for b in tier:
            assert b.start % width == 0
            assert b.start <= b.first_ts <= b.last_ts < b.start + width
            assert b.min <= b.last <= b.max
    count, total, low, high = views.totals(series)
    assert count == len(samples)
    assert (low, high) == (min(v for _, v in samples), max(v for _, v in samples))
    assert total == pytest.approx(math.fsum(v for _, v in samples), rel=1e-9, abs=1e-3)
    assert len(series.raw_ts) <= cap


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stream=st.lists(st.tuples(gaps, values, st.booleans()), max_size=300),
    split=st.floats(0, 1),
)
def test_a_fold_resumed_from_a_snapshot_has_the_same_tiers(stream, split):
    # given logged and live samples across days (sweeps included)
    events, t = [], T0
    for gap, value, live in stream:
        t += gap
        kind = "MetricSampled" if live else "MetricRecorded"
        events.append({"type": kind, "ts": t, "name": "x", "value": value, "labels": {}})

    def fold(state, part, first_seq):
        for seq, fields in enumerate(part, first_seq):
            if fields["type"] == "MetricSampled":
                folds.observe(fields, state)
            else:
                folds.evolve(seq, fields, state)
        return state

    def small():
        return MetricsState(retention_s=2 * DAY, raw_window_s=1800.0, raw_max_samples=20)

    cut = int(split * len(events))
    # when folded whole, and through a snapshot after `cut` events
    whole = fold(small(), events, 1)
    resumed = fold(through_codec(fold(small(), events[:cut], 1)), events[cut:], cut + 1)
    # then the states are the same
    assert dumped(resumed) == dumped(whole)


@given(st.lists(st.floats(-1e9, 1e9), min_size=1, max_size=60), st.floats(0, 1))
def test_weighted_quantiles_with_weights_of_one_are_the_plain_quantiles(values, q):
    (got,) = views.weighted_quantiles([(v, 1) for v in values], [q])
    assert got == quantile(values, q)


@given(st.lists(st.tuples(st.floats(-1e6, 1e6), st.integers(1, 5)), min_size=1, max_size=30),
       st.floats(0, 1))  # fmt: skip
def test_weighted_quantiles_are_the_quantiles_of_the_repeated_values(pairs, q):
    repeated = [v for v, w in pairs for _ in range(w)]
    (got,) = views.weighted_quantiles(pairs, [q])
    assert got == pytest.approx(quantile(repeated, q), rel=1e-12, abs=1e-9)


# --- the views across tiers ---------------------------------------------------------------------


def thirty_hours(name="x", labels=(), every_s=10.0) -> MetricsState:
    state = MetricsState(retention_s=48 * 3600.0)
    fed(state, [(T0 + every_s * i, float(i % 97)) for i in range(int(30 * 3600 / every_s))],
        name, labels)  # fmt: skip
    return state


def test_history_gives_raw_points_then_minute_and_hour_aggregates():
    # given 30 hours of a sample every 10 s
    state = thirty_hours()
    series = state.get("x")
    # when the history is asked for
    rows = views.history(state)["x"]
    # then raw rows are as before; aggregates add their count, extremes and resolution
    assert [r["timestamp"] for r in rows] == sorted(r["timestamp"] for r in rows)
    raw = [r for r in rows if "resolution_s" not in r]
    assert [(r["timestamp"], r["value"]) for r in raw] == list(series.samples)
    assert set(raw[0]) == {"timestamp", "value", "labels"}
    by_width = {60.0: [], 3600.0: []}
    for r in rows:
        if "resolution_s" in r:
            by_width[r["resolution_s"]].append(r)
            assert r["timestamp"] % r["resolution_s"] == 0
            assert r["min"] <= r["value"] <= r["max"]
    assert len(by_width[60.0]) == len(series.minutes)
    assert len(by_width[3600.0]) == len(series.hours) > 0
    assert sum(r.get("count", 1) for r in rows) == 30 * 360
    # a range keeps the buckets whose samples overlap it
    start = series.samples[0][0] - 90
    recent = views.history(state, ["x"], start=start)["x"]
    assert {r.get("resolution_s") for r in recent} == {None, 60.0}
    assert all(r["timestamp"] >= start - 60 for r in recent)
    assert views.history(state, ["y"]) == {}


def test_exports_carry_every_tier(tmp_path):
    # given 30 hours of a sample every 10 s
    state = thirty_hours()
    alerts = alert_folds.AlertsState()
    points = list(views.points(state.get("x")))
    # when exported as CSV and JSON
    path = views.export(state, alerts, T0, tmp_path / "m.csv", "csv")
    rows = list(csv.DictReader(path.open()))
    # then each point is a row (a bucket's with its mean), and JSON keeps every count
    assert set(rows[0]) == set(views.CSV_COLUMNS)
    assert len(rows) == len(points)
    assert [float(r["value"]) for r in rows] == pytest.approx([p[1] for p in points])
    path = views.export(state, alerts, T0, tmp_path / "m.json", "json")
    history = json.loads(path.read_text())["history"]["x"]
    assert sum(r.get("count", 1) for r in history) == 30 * 360


def test_stats_count_mean_and_max_are_exact_across_tiers():
    # given a busy series over 30 hours: hour, minute and raw tiers
    labels = (("stage", "s"),)
    state = thirty_hours("stage_duration_seconds", labels)
    series = state.get("stage_duration_seconds", labels)
    assert series.hours
    kept = [float(i % 97) for i in range(30 * 360)][-views.totals(series)[0] :]
    # when the views summarise it
    stage = views.stage_view(state)["s"]
    # then count, mean and max are those of every sample still held
    stats = stage["duration_seconds"]
    assert stats["count"] == len(kept)
    assert stats["mean"] == pytest.approx(sum(kept) / len(kept))
    assert stats["max"] == max(kept)
    assert min(kept) <= stats["p50"] <= stats["p90"] <= stats["p99"] <= max(kept)
    assert stage["duration_trend"]["runs"] == 20


def test_quantiles_are_exact_across_tiers_where_each_bucket_holds_one_sample():
    # given a stage that ran every 2 minutes for 20 hours: one run per minute bucket
    labels = (("stage", "s"),)
    state = MetricsState()
    runs = [(T0 + 120.0 * i, float((i * 37) % 101)) for i in range(600)]
    series = fed(state, runs, "stage_duration_seconds", labels)
    assert len(series.minutes) > 500
    # when the views summarise it, then the quantiles are those of every run
    stats = views.stage_view(state)["s"]["duration_seconds"]
    values = [v for _, v in runs]
    assert stats["count"] == 600
    for key, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        assert stats[key] == quantile(values, q)
    assert views.stage_view(state)["s"]["duration_trend"] == views.trend(values)


def test_prometheus_quantiles_read_every_tier_and_the_max_is_exact():
    from prometheus_client.parser import text_string_to_metric_families

    from actors.monitor.prometheus import render

    # given 30 hours of stage durations, when /metrics is rendered
    labels = (("stage", "s"),)
    state = thirty_hours("stage_duration_seconds", labels)
    text = render(state, alert_folds.AlertsState(), T0).decode()
    # then the quantiles read every tier and the max is the max of every sample
    family = next(f for f in text_string_to_metric_families(text)
                  if f.name == "porch_stage_duration_seconds")  # fmt: skip
    found = {s.labels["quantile"]: s.value for s in family.samples}
    series = state.get("stage_duration_seconds", labels)
    assert found["1"] == views.totals(series)[3] == 96.0
    assert found["0.5"] == views.weighted_quantiles(views.weighted(series), [0.5])[0]


# --- rules on raw data --------------------------------------------------------------------------


def test_rules_fire_and_resolve_on_the_newest_raw_sample_after_hours_of_rolling():
    # given a pending rule on a series fed 10 samples a second for two hours
    state, engine = MetricsState(), AlertEngine()
    rule = AlertRuleAdded(**check_rule({"rule_id": "hot", "metric_name": "load",
                                        "condition": "greater_than", "threshold": 90,
                                        "severity": "high", "pending_s": 30,
                                        "cooldown_minutes": 0}).to_map())  # fmt: skip
    engine.apply(1, {**to_map(rule), "ts": T0})
    decided = []

    def sample(ts, value):
        folds.observe({"type": "MetricSampled", "ts": ts, "name": "load", "value": value,
                       "labels": {"host": "h"}}, state)  # fmt: skip
        for series in state.changed:
            for event in engine.observe(series, ts):
                decided.append(event)
                engine.apply(len(decided) + 1, {**to_map(event), "ts": ts})  # as the hub would

    t = T0
    for _ in range(2 * 3600 * 10):
        t += 0.1
        sample(t, 50.0)
    series = state.get("load", (("host", "h"),))
    assert series.minutes, "the older samples are minute buckets by now"
    assert decided == []
    # when the value stays high for 40 s, it fires once its 30 s pending time is over
    for _ in range(400):
        t += 0.1
        sample(t, 95.0)
    (fired,) = decided
    assert fired.TYPE == "AlertFired"
    assert fired.value == 95.0
    # and resolves on the first clear sample
    t += 0.1
    sample(t, 10.0)
    assert [e.TYPE for e in decided] == ["AlertFired", "AlertResolved"]
    assert (series.last, series.last_ts) == (10.0, t)

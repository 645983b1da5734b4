"""The `porch` command as a user runs it: clear one-line errors, exit codes, replay output,
JSON for programs and tables for people."""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from actors.api.system import System
from bus.client import Client
from stages.sample import write_sample
from store.segment import list_segments
from tests.conftest import PORCH, run_porch
from tests.slowstages import STAGES


def assert_one_line_error(result, text: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("porch: ")
    assert text in lines[0]


def test_publish_prints_the_seq(hub):
    first = run_porch("publish", "MetricRecorded", "name=rows", "value=12", data_dir=hub.data_dir)
    second = run_porch(
        "publish",
        "--json",
        '{"type": "CancelRequested", "execution_id": "e1"}',
        data_dir=hub.data_dir,
    )
    assert (first.returncode, first.stdout.strip()) == (0, "1")
    assert (second.returncode, second.stdout.strip()) == (0, "2")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["NoSuchEvent"], "unknown event type 'NoSuchEvent'"),
        (
            ["MetricRecorded", "name=x", "value=abc"],
            "MetricRecorded: field 'value' must be float, got 'abc'",
        ),
        (["MetricRecorded", "name=x"], "MetricRecorded: missing required field 'value'"),
        (
            ["MetricRecorded", "name=x", "value=1", "colour=red"],
            "MetricRecorded: unknown field 'colour'",
        ),
        (["MetricRecorded", "novalue"], "'novalue' is not KEY=VALUE"),
        (["--json", "{not json"], "--json is not valid JSON"),
        (["--json", "[1, 2]"], 'needs an object with a "type" string'),
        (
            ["--json", '{"type": "StageStarted", "execution_id": 5, "stage": "s", "worker": "w"}'],
            "StageStarted: field 'execution_id' must be str, got int",
        ),
        (
            ["--json", '{"type": "StageStarted", "execution_id": "e"}'],
            "StageStarted: missing required field 'stage'",
        ),
        (
            ["MetricRecorded", "name=x", "value=1", "--json", "{}"],
            "either TYPE KEY=VALUE... or --json",
        ),
        ([], "give an event TYPE"),
    ],
)
def test_bad_publish_input_exits_2_with_one_line(hub, args, message):
    result = run_porch("publish", *args, data_dir=hub.data_dir)
    assert_one_line_error(result, message)
    assert result.stdout == ""


def test_publish_without_a_hub_says_so(data_dir):
    result = run_porch("publish", "MetricRecorded", "name=x", "value=1", data_dir=data_dir)
    assert_one_line_error(result, "no hub is running for data dir")


def test_unknown_flag_is_a_usage_error():
    result = run_porch("replay", "--frm", "3")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "unrecognized arguments: --frm" in result.stderr


def test_replay_json_lines_carry_seq_type_and_fields(hub):
    run_porch("publish", "MetricRecorded", "name=a", "value=1", data_dir=hub.data_dir)
    run_porch("publish", "CancelRequested", "execution_id=e9", "reason=test", data_dir=hub.data_dir)
    result = run_porch("replay", "--json", data_dir=hub.data_dir)
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["seq"], r["type"]) for r in rows] == [(1, "MetricRecorded"), (2, "CancelRequested")]
    assert rows[1]["execution_id"] == "e9"
    assert rows[1]["reason"] == "test"
    filtered = run_porch("replay", "--json", "--execution", "e9", data_dir=hub.data_dir)
    assert [json.loads(x)["seq"] for x in filtered.stdout.splitlines()] == [2]


def test_replay_reads_the_files_when_no_hub_runs(hub):
    run_porch(
        "publish",
        "ExecutionRequested",
        "execution_id=e1",
        'stages=["a"]',
        "input_data=x",
        data_dir=hub.data_dir,
    )
    run_porch(
        "publish",
        "ExecutionCompleted",
        "execution_id=e1",
        "records_processed=5",
        "duration_s=1",
        data_dir=hub.data_dir,
    )
    hub.stop()
    lines = run_porch(
        "replay", "--type", "ExecutionCompleted", data_dir=hub.data_dir
    ).stdout.splitlines()
    assert len(lines) == 1
    assert "ExecutionCompleted" in lines[0]
    assert "records_processed=5" in lines[0]
    summary = run_porch("replay", "--summary", data_dir=hub.data_dir).stdout
    assert "events: 2 (last seq 2)" in summary
    assert "executions: 1 (completed 1)" in summary


def test_log_verify_names_the_offset_of_damage(hub):
    for i in range(5):
        run_porch("publish", "MetricRecorded", "name=a", f"value={i}", data_dir=hub.data_dir)
    hub.stop()
    ok = run_porch("log", "verify", data_dir=hub.data_dir)
    assert ok.returncode == 0
    assert ok.stdout.startswith("ok: 5 records, seq 1..5")
    segment = list_segments(hub.data_dir / "log")[0]
    raw = bytearray(segment.read_bytes())
    raw[40] ^= 0xFF
    segment.write_bytes(bytes(raw))
    bad = run_porch("log", "verify", data_dir=hub.data_dir)
    assert bad.returncode == 1
    assert "corrupt:" in bad.stdout
    assert "at offset 0: crc mismatch" in bad.stdout
    refused = run_porch("hub", data_dir=hub.data_dir)
    assert_one_line_error(refused, "corrupt log record")


def test_log_repair_cuts_at_the_damage_only_when_told_and_keeps_the_rest_aside(hub):
    for i in range(6):
        run_porch("publish", "MetricRecorded", "name=a", f"value={i}", data_dir=hub.data_dir)
    hub.stop()
    segment = list_segments(hub.data_dir / "log")[0]
    raw = bytearray(segment.read_bytes())
    offsets = [0]
    while offsets[-1] < len(raw):  # record starts: [u32 len][u32 crc][u64 seq][payload]
        offsets.append(offsets[-1] + 16 + int.from_bytes(raw[offsets[-1] : offsets[-1] + 4], "big"))
    raw[offsets[3] + 20] ^= 0xFF  # damage the 4th record's payload
    segment.write_bytes(bytes(raw))
    plan = run_porch("log", "repair", data_dir=hub.data_dir)
    assert plan.returncode == 2
    assert f"would cut the log at {segment} at offset {offsets[3]}" in plan.stdout
    assert segment.stat().st_size == len(raw)  # nothing done without --yes
    done = run_porch("log", "repair", "--yes", data_dir=hub.data_dir)
    assert done.returncode == 0, done.stderr
    assert "3 records kept (up to seq 3)" in done.stdout
    assert run_porch("log", "verify", data_dir=hub.data_dir).stdout.startswith(
        "ok: 3 records, seq 1..3"
    )
    (kept,) = (hub.data_dir / "log").glob("quarantine-*/*.from-*")
    assert kept.read_bytes() == bytes(raw[offsets[3] :])


def test_hub_refuses_a_bad_config(tmp_path):
    config = tmp_path / "porch.toml"
    config.write_text('[hub]\nfsync = "sometimes"\n')
    result = run_porch("hub", "--config", str(config), data_dir=tmp_path / "d")
    assert_one_line_error(
        result,
        f'config file {config}: hub.fsync = "sometimes": expected one of always, batch, never',
    )
    config.write_text("[hub]\nbatch_maxx = 3\n")
    result = run_porch("hub", "--config", str(config), data_dir=tmp_path / "d")
    assert_one_line_error(result, f"config file {config}: hub.batch_maxx is not a setting")


def test_hub_refuses_a_public_bind_without_insecure(tmp_path):
    result = run_porch("hub", "--ingest", "tcp://0.0.0.0:7999", data_dir=tmp_path / "d")
    assert_one_line_error(result, "binding a non-loopback address needs CURVE keys")


def test_stages_lists_the_builtins():
    result = run_porch("stages")
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert {"data_cleaning", "feature_engineering", "data_aggregation", "data_validation"} <= set(
        names
    )


def test_pipeline_check_prints_the_steps_or_one_line(tmp_path):
    good = tmp_path / "cost.toml"
    good.write_text('[pipeline]\nname = "cost"\nstages = ["data_cleaning", "data_aggregation"]\n')
    result = run_porch("pipeline", "check", str(good))
    assert result.returncode == 0, result.stderr
    assert "data_aggregation: data_aggregation reads data_cleaning" in result.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[[step]]\nid = "a"\nstage = "data_cleaning"\nafter = ["a"]\n')
    result = run_porch("pipeline", "check", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip() == "porch: pipeline 'bad' has a cycle: a -> a"


def test_the_command_line_starts_without_pandas():
    """Every query starts a Python process: pandas (0.3 s to import) only for what needs it."""
    import subprocess
    import sys

    probe = "import sys, actors.cli; print(sorted(m for m in ('pandas', 'pyarrow') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_orchestrator_refuses_a_malformed_stage_flag_at_the_door(hub):
    result = run_porch("orchestrator", "--stage", "nonsense", data_dir=hub.data_dir)
    assert_one_line_error(result, "--stage 'nonsense': expected NAME=module:function")


def test_orchestrator_stops_with_one_line_when_a_local_stage_cannot_be_imported(hub):
    # given a stage flag of the right form naming a module that is not there
    # when the orchestrator starts (it goes live, then loads the stages)
    result = run_porch(
        "orchestrator", "--stage", "mine=no_such_module_here:clean", data_dir=hub.data_dir
    )
    # then it exits 2, and its last word names the module
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("porch: ")
    assert "no_such_module_here" in last


@pytest.mark.parametrize(
    ("tz", "day_before", "expected"),
    [
        ("America/New_York", "2026-03-07", ["2026-03-07T02:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]),
        ("Europe/Berlin", "2026-03-28", ["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]),
    ],
)  # fmt: skip
def test_schedule_preview_shows_a_job_the_clock_jumps_over_at_the_jump(tz, day_before, expected):
    # the README's preview: what the scheduler fires is what the preview prints
    result = run_porch(
        "schedule", "preview", "30 2 * * *", "--tz", tz, "--from", day_before, "--count", "3"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == expected


# --- JSON for programs, tables for people --------------------------------------------------------


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    """A running system with what the listings list: an execution run by `porch run --wait
    --json`, two schedules, two alert rules and two alerts."""
    root = tmp_path_factory.mktemp("cli")
    write_sample(root / "in.parquet", 300, seed=3)
    system = System(data_dir=root / "porch", workers=1, stages=STAGES, log=subprocess.DEVNULL)
    system.start()
    try:
        d = system.data_dir
        ran = run_porch("run", str(root / "in.parquet"), "--stages", "noop", "--id", "first",
                        "--wait", "--json", data_dir=d, timeout=60)  # fmt: skip
        for name, cron in (("nightly", "30 2 * * *"), ("hourly", "0 * * * *")):
            added = run_porch("schedule", "add", name, "--cron", cron, "--input",
                              str(root / "in.parquet"), "--stages", "noop", data_dir=d)  # fmt: skip
            assert added.returncode == 0, added.stderr
        for rule in ("slow", "slower"):
            added = run_porch("alerts", "add-rule", rule, "--metric", "stage_duration_seconds",
                              "--condition", "greater_than", "--threshold", "60", data_dir=d)  # fmt: skip
            assert added.returncode == 0, added.stderr
            fired = run_porch("publish", "AlertFired", f"alert_id={rule}-1", f"rule_id={rule}",
                              "metric_name=stage_duration_seconds", "value=61", "threshold=60",
                              "severity=high", "message=too slow", data_dir=d)  # fmt: skip
            assert fired.returncode == 0, fired.stderr
        yield root, d, ran
    finally:
        system.stop()


def test_run_wait_json_prints_only_the_final_status_on_stdout(populated):
    _, _, ran = populated
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["status"] == "completed"
    assert "execution first requested (seq" in ran.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["status", "first", "--json"],
        ["status", "--json"],
        ["history", "--json"],
        ["stats", "--json"],
        ["metrics", "--json"],
        ["schedule", "list", "--json"],
        ["schedule", "show", "nightly"],
        ["alerts", "list", "--json"],
        ["alerts", "rules", "--json"],
        ["replay", "--summary", "--json"],
        ["replay", "--state", "first", "--json"],
        ["replay", "--queue", "--json"],
        ["gc", "--keep-last", "0", "--keep-days", "0", "--json"],
    ],
    ids=" ".join,
)
def test_json_output_is_one_json_document(populated, args):
    _, d, _ = populated
    result = run_porch(*args, data_dir=d)
    assert result.returncode == 0, result.stderr
    json.loads(result.stdout)  # the whole of stdout, as `| jq` reads it


def test_run_json_without_wait_prints_the_id_and_seq(populated):
    root, d, _ = populated
    result = run_porch("run", str(root / "in.parquet"), "--stages", "noop", "--id", "nowait",
                       "--json", data_dir=d)  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["execution_id"] == "nowait"
    assert printed["seq"] > 0


def assert_table(text: str, header: list[str], rows: int) -> None:
    """A header row, then `rows` rows, in aligned columns: gutters of two or more spaces run
    down every line and cut each into as many columns as the header has."""
    lines = text.splitlines()
    start = next(
        (i for i, line in enumerate(lines) if re.split(r"\s{2,}", line.strip()) == header), None
    )
    assert start is not None, f"no header {header} in:\n{text}"
    block = lines[start : start + 1 + rows]
    assert len(block) == rows + 1, text
    width = max(len(line) for line in block)
    filled = "".join(
        "x" if any(i < len(line) and line[i] != " " for line in block) else " "
        for i in range(width)
    )
    assert len(re.split(r" {2,}", filled.strip())) == len(header), "\n".join(block)


TABLES: list[tuple[list[str], list[str], Callable]] = [
    (["history"], ["EXECUTION", "STATUS", "MODE", "STARTED", "RECORDS", "DURATION_S"], len),
    (["stats"], ["STAGE", "RUNS", "FAILURES", "MEAN_S", "P50_S", "P95_S", "RECORDS"], len),
    (["metrics"], ["STAGE", "RUNS", "P50_S", "P99_S", "RECORDS_PER_S", "DURATION_TREND"],
     lambda j: len(j["stages"])),
    (["schedule", "list"], ["SCHEDULE", "TYPE", "WHEN", "STATE", "NEXT_FIRE", "LAST_RUN"], len),
    (["alerts", "list"], ["ALERT", "STATE", "SEVERITY", "FIRED", "MESSAGE"], len),
    (["alerts", "rules"], ["RULE", "METRIC", "CONDITION", "THRESHOLD", "SCOPE", "SEVERITY",
                           "COOLDOWN_MIN", "PENDING_S", "ENABLED"], len),
    (["status", "first"], ["STEP", "STATUS", "PARTS", "RECORDS_IN", "RECORDS_OUT", "DURATION_S",
                           "ATTEMPTS", "NOTE"], lambda j: len(j["steps"])),
    (["gc", "--keep-last", "0", "--keep-days", "0"], ["EXECUTION", "AGE", "SIZE", "REMOVES"],
     lambda j: len(j["removals"])),
]  # fmt: skip


@pytest.mark.parametrize(("args", "header", "count"), TABLES, ids=[" ".join(t[0]) for t in TABLES])
def test_a_listing_is_a_table_with_a_header_and_a_row_per_item(populated, args, header, count):
    _, d, _ = populated
    # the JSON form says how many rows the table must have
    rows = count(json.loads(run_porch(*args, "--json", data_dir=d).stdout))
    assert rows >= 1
    result = run_porch(*args, data_dir=d)
    assert result.returncode == 0, result.stderr
    assert_table(result.stdout, header, rows)


def test_ctrl_c_on_run_wait_says_the_execution_goes_on_and_how_to_cancel_it(populated, tmp_path):
    root, d, _ = populated
    pipeline = tmp_path / "slow.toml"
    pipeline.write_text('[pipeline]\nstages = ["slow"]\n\n[config.slow]\nseconds = 120\n\n'
                        '[stages]\nslow = "tests.slowstages:slow"\n')  # fmt: skip
    with Client.local(d) as client, client.subscribe(1, types=["StageStarted",
                                                               "ExecutionCancelled"]) as sub:  # fmt: skip

        def wait_for(kind: str) -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                for record in sub.receive(200):
                    fields = record.fields()
                    if fields["type"] == kind and fields.get("execution_id") == "watched":
                        return
            raise AssertionError(f"no {kind} for the execution")

        # given `porch run --wait` following an execution whose stage is running
        # (Ctrl-C as in a terminal: a suite run as a background job ignores SIGINT, and its
        # children would inherit that)
        interactive = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler);"
                       " sys.argv[0] = 'porch'; runpy.run_module('actors.cli', run_name='__main__')")  # fmt: skip
        watcher = subprocess.Popen(
            [sys.executable, "-c", interactive, "run", str(root / "in.parquet"), "--pipeline",
             str(pipeline), "--id", "watched", "--wait", "--data-dir", str(d)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            wait_for("StageStarted")
            # ... and showing it (so it is following it, not still starting up)
            seen, deadline = b"", time.monotonic() + 60
            out = watcher.stdout.fileno()  # the bytes as they come: no buffered readline
            while b"slow: running" not in seen and time.monotonic() < deadline:
                if select.select([out], [], [], 0.5)[0]:
                    seen += os.read(out, 65536)
            assert b"slow: running" in seen, seen
            # when the user presses Ctrl-C
            watcher.send_signal(signal.SIGINT)
            _, stderr = watcher.communicate(timeout=30)
        finally:
            if watcher.poll() is None:
                watcher.kill()
                watcher.wait(10)
        # then it exits 130 with one line: the execution goes on, and the command to cancel it
        assert watcher.returncode == 130, stderr
        (line,) = stderr.strip().splitlines()
        assert "Traceback" not in line
        assert "execution watched goes on" in line
        command = shlex.split(line.split("To cancel it: ", 1)[1])
        assert command == ["porch", "cancel", "watched", "--data-dir", str(d)]
        # and that command, pasted, cancels it
        cancelled = subprocess.run([*PORCH, *command[1:]], capture_output=True, text=True,
                                   timeout=30, check=False)  # fmt: skip
        assert cancelled.returncode == 0, cancelled.stderr
        wait_for("ExecutionCancelled")

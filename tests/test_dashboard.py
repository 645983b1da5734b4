"""`porch dashboard` over HTTP, as a program or another machine meets it: the token a
non-loopback address needs, clear errors for bad requests, buttons that append the CLI's
events after the CLI's checks, a page that follows an execution without reading it from the
hub again, and a CPU priority below the actors'."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

from actors.api.system import stop_process
from actors.commands.dashboard import NICE_DEFAULT
from actors.dashboard.live import Live
from bus.events import (
    ExecutionRequested,
    ExecutionStarted,
    MetricRecorded,
    StageDispatched,
    StageProgress,
)
from store.projections.executions import TYPES as FOLDED
from tests.conftest import PORCH, run_porch


class Dashboard:
    """`porch dashboard` started as a user starts it, stopped at the end."""

    def __init__(self, data_dir, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*PORCH, "dashboard", "--data-dir", str(data_dir), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        line = self.proc.stdout.readline()  # the address, once it listens
        if not line.startswith("porch dashboard: "):
            self.stop()
            raise AssertionError(f"dashboard did not start: {line}{self.proc.stderr.read()}")
        port = urllib.parse.urlsplit(line.split(": ", 1)[1].strip()).port
        self.port = port

    def ask(self, method: str, path: str, headers: dict | None = None, body: str | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            reply = conn.getresponse()
            data = reply.read()
        finally:
            conn.close()
        kind = reply.getheader("Content-Type", "")
        return reply, json.loads(data) if kind == "application/json" else data.decode()

    def post(self, path: str):
        return self.ask("POST", path, {"Content-Type": "application/json"}, "{}")

    def stop(self) -> None:
        stop_process(self.proc, 10)
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def dashboard(hub):
    started = Dashboard(hub.data_dir)
    try:
        yield started
    finally:
        started.stop()


def test_a_non_loopback_address_needs_the_token(hub):
    # given no token in the data dir: another address is refused, with how to make one
    refused = run_porch("dashboard", "--host", "0.0.0.0", data_dir=hub.data_dir)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1
    assert "needs a token" in refused.stderr
    assert "porch dashboard-token" in refused.stderr
    up = run_porch("up", "--dashboard-host", "0.0.0.0", data_dir=hub.data_dir)
    assert up.returncode == 2
    assert up.stderr == refused.stderr
    # when a token is made, it is private
    made = run_porch("dashboard-token", data_dir=hub.data_dir)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    path = hub.data_dir / "dashboard" / "token"
    assert path.read_text().strip() == token
    assert path.stat().st_mode & 0o077 == 0
    assert run_porch("dashboard-token", data_dir=hub.data_dir).stdout.strip() == token
    # then the dashboard serves another address, and only to who shows the token
    served = Dashboard(hub.data_dir, "--host", "0.0.0.0")
    try:
        reply, body = served.ask("GET", "/api/executions")
        assert reply.status == 401
        assert "token" in body["error"]
        reply, _ = served.ask("GET", "/api/executions", {"Authorization": "Bearer wrong"})
        assert reply.status == 401
        reply, _ = served.ask("GET", "/api/executions", {"Authorization": f"Bearer {token}"})
        assert reply.status == 200
        # a browser opens /?token=... once and keeps an HttpOnly cookie
        reply, _ = served.ask("GET", f"/?token={token}")
        assert reply.status == 303
        cookie = reply.getheader("Set-Cookie")
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        reply, page = served.ask("GET", "/", {"Cookie": cookie.split(";")[0]})
        assert reply.status == 200
        assert "<title>porch dashboard</title>" in page
    finally:
        served.stop()


BAD_REQUESTS = [
        ("GET", "/api/executions?page=0", {}, 400, "page must be a whole number 1..1000000"),
        ("GET", "/api/executions?status=happy", {}, 400, "status 'happy' is not one of"),
        ("GET", "/api/executions?per_page=x", {}, 400, "per_page must be a whole number"),
        ("GET", "/api/executions/a%20b", {}, 400, "is not an id"),
        ("GET", "/api/executions/nope", {}, 404, "no execution 'nope' in the log"),
        ("GET", "/api/executions/nope/at?seq=-1", {}, 404, "no execution 'nope'"),
        ("GET", "/api/nothing", {}, 404, "no API at /api/nothing"),
        ("GET", "/static/../server.py", {}, 404, "no file"),
        ("GET", "/etc/passwd", {}, 404, "the dashboard is at /"),
        ("GET", "/api/executions", {"Host": "evil.example:80"}, 403, "not this dashboard's"),
        ("POST", "/api/executions/x/pause", {}, 415, "must be application/json"),
        ("POST", "/api/executions/x/pause",
         {"Content-Type": "application/json", "Origin": "http://evil.example"}, 403, "origin"),
        ("POST", "/api/executions/x/explode", {"Content-Type": "application/json"}, 400,
         "action 'explode' is not one of pause, resume, cancel"),
        ("POST", "/api/stages/x/run", {"Content-Type": "application/json"}, 404, "no action"),
        ("POST", "/api/alerts/nope/ack", {"Content-Type": "application/json"}, 400,
         "no alert 'nope'"),
        ("DELETE", "/api/executions", {}, 405, "GET and POST only"),
        ("GET", "/api/executions?after=x", {}, 400, "after must be a whole number"),
]  # fmt: skip


def test_the_dashboard_yields_the_cpu_to_the_actors(dashboard):
    # given a dashboard that serves and follows the hub (its fold, HTTP and ZeroMQ threads run)
    reply, _ = dashboard.ask("GET", "/api/executions")
    assert reply.status == 200
    # then every one of its threads runs at a lower CPU priority than the one that started it
    own = os.getpriority(os.PRIO_PROCESS, 0)
    threads = [int(t.name) for t in Path(f"/proc/{dashboard.proc.pid}/task").iterdir()]
    assert len(threads) >= 4
    niceness = {}
    for tid in threads:
        with contextlib.suppress(ProcessLookupError):  # a thread that ended since the listing
            niceness[tid] = os.getpriority(os.PRIO_PROCESS, tid)
    assert set(niceness.values()) == {min(19, own + NICE_DEFAULT)}, niceness


def test_a_bad_request_gets_a_clear_error(dashboard):
    for method, path, headers, status, said in BAD_REQUESTS:
        # when a request is wrong, the reply says what and why
        reply, body = dashboard.ask(method, path, headers, "{}" if method == "POST" else None)
        assert reply.status == status, (path, body)
        assert said in body["error"], (path, body)
        # then the dashboard goes on serving
        reply, body = dashboard.ask("GET", "/api/executions")
        assert reply.status == 200
        assert body["rows"] == []


def test_buttons_append_the_cli_events_after_the_door_checks(hub, client, dashboard):
    # given a requested execution (no orchestrator: it stays requested)
    seq = client.append(ExecutionRequested(execution_id="ex-1", stages=["data_cleaning"],
                                           input_data="/nowhere.parquet"))  # fmt: skip
    # when pause is posted, it is acknowledged with the seq of the PauseRequested
    reply, body = dashboard.post("/api/executions/ex-1/pause")
    assert reply.status == 200, body
    assert body["message"] == f"pause of ex-1 requested (seq {body['seq']})"
    record = next(client.read(body["seq"], body["seq"]))
    assert record.type == "PauseRequested"
    assert record.fields()["execution_id"] == "ex-1"
    assert body["seq"] > seq
    paused = body["seq"]
    # and an unknown execution is refused as the CLI refuses it
    reply, body = dashboard.post("/api/executions/ex-2/cancel")
    assert reply.status == 400
    assert body["error"] == "cancel: no execution 'ex-2' in the log"
    cli = run_porch("cancel", "ex-2", data_dir=hub.data_dir)
    assert cli.stderr.strip() == f"porch: {body['error']}"
    # and `porch status` says where the dashboard is
    status = run_porch("status", "ex-1", data_dir=hub.data_dir)
    assert f"dashboard: http://127.0.0.1:{dashboard.port}/#/execution/ex-1" in status.stdout
    # and the list, asked for as of the pause's seq, has it with its pause requested
    reply, body = dashboard.ask("GET", f"/api/executions?q=ex-1&after={paused}")
    assert [r["execution_id"] for r in body["rows"]] == ["ex-1"]
    assert body["rows"][0]["status"] == "requested"
    reply, body = dashboard.ask("GET", f"/api/executions/ex-1?after={paused}")
    assert body["pause_requested"] is True


def test_the_list_pages_through_10000_executions(hub, client, dashboard):
    # given 10,000 executions in the log (none started: every one stays in the fold)
    events = [
        ExecutionRequested(execution_id=f"ex-{n:05d}", stages=["data_cleaning"],
                           input_data="/nowhere.parquet", schedule_id="s" if n % 2 else None)
        for n in range(10_000)
    ]  # fmt: skip
    for first in range(0, len(events), 1000):
        client.publish_many(events[first : first + 1000])
    seen, last = 0, 0
    with client.subscribe(1, types=["ExecutionRequested"]) as sub:
        deadline = time.monotonic() + 60
        while seen < len(events) and time.monotonic() < deadline:
            records = sub.receive(500)
            seen += len(records)
            last = records[-1].seq if records else last
    assert seen == len(events)
    # when its last page and a filtered page are asked for, as of the last one's seq
    reply, body = dashboard.ask("GET", f"/api/executions?after={last}&page=200&per_page=50")
    assert reply.status == 200, body
    # then the pages hold every execution, newest first
    assert body["matched"] == 10_000
    assert body["rows"][-1]["execution_id"] == "ex-00000"
    assert body["rows"][0]["execution_id"] == "ex-00049"
    reply, body = dashboard.ask("GET", "/api/executions?q=schedule%20s&per_page=3")
    assert body["matched"] == 5000
    assert [r["execution_id"] for r in body["rows"]] == ["ex-09999", "ex-09997", "ex-09995"]
    assert body["rows"][0]["trigger"] == "schedule s"


def _notices(reply):
    """The notices of a server-sent events reply, as they come (a read waits at most the
    connection's timeout)."""
    while True:
        line = reply.fp.readline()
        assert line, "the stream ended"
        if line.startswith(b"data: "):
            yield json.loads(line[len(b"data: ") :])


def _follow(listed: dict, events: list[dict]) -> None:
    events[listed["start"] :] = listed["events"]


def test_a_page_following_an_execution_reads_its_history_from_the_hub_once(client, dashboard):
    # given an execution with a task dispatched, and a page that follows it on the stream
    eid = "ex-followed"
    client.append(ExecutionRequested(execution_id=eid, stages=["data_cleaning"],
                                     input_data="/nowhere.parquet"))  # fmt: skip
    seq = client.append(StageDispatched(execution_id=eid, stage="data_cleaning", step="clean",
                                        task_id="t-0", partition=0))  # fmt: skip
    reply, body = dashboard.ask("GET", f"/api/executions/{eid}?after={seq}")
    assert reply.status == 200, body
    conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=10)
    try:
        conn.request("GET", f"/api/events?execution={eid}")
        notices = _notices(conn.getresponse())
        hello = next(notices)
        assert hello["hello"] is True
        streamed: list[dict] = []
        _follow(hello["page"]["events"], streamed)
        assert [e["type"] for e in streamed] == ["ExecutionRequested", "StageDispatched"]
        assert hello["page"]["execution"]["execution_id"] == eid
        drawn = hello["page"]["timeline"]
        before = client.stats()["requests"]
        # when its events keep coming, and after each the page hears of them, and a program
        # reads its timeline, its events from where it left off, and its state
        rounds = 20
        known = {"from": 0, "epoch": 0}
        listed_ones: list[dict] = []
        for n in range(1, rounds + 1):
            client.append(StageProgress(execution_id=eid, stage="data_cleaning", step="clean",
                                        worker="w-1", fraction=n / rounds))  # fmt: skip
            seq = client.append(StageDispatched(execution_id=eid, stage="data_cleaning",
                                                step="clean", task_id=f"t-{n}", partition=n))  # fmt: skip
            while streamed[-1]["seq"] < seq:
                notice = next(notices)
                if "page" in notice:
                    _follow(notice["page"]["events"], streamed)
                    drawn = notice["page"]["timeline"] or drawn
            assert len(drawn["bars"]) == n + 1
            reply, timeline = dashboard.ask("GET", f"/api/executions/{eid}/timeline?after={seq}")
            assert reply.status == 200, timeline
            assert len(timeline["bars"]) == n + 1
            reply, listed = dashboard.ask(
                "GET", f"/api/executions/{eid}/events?from={known['from']}&epoch={known['epoch']}"
            )
            assert reply.status == 200, listed
            _follow(listed, listed_ones)
            known = {"from": listed["frozen"], "epoch": listed["epoch"]}
            reply, shown = dashboard.ask("GET", f"/api/executions/{eid}/at?seq={seq}")
            assert reply.status == 200, shown
            assert shown["seq"] == seq
        # then the hub served the test's own appends and stats, and (next to) nothing for pages
        served = client.stats()["requests"] - before - (2 * rounds + 1)
        assert served <= 3
    finally:
        conn.close()
    # and the lists, followed piece by piece, are the execution's events in the log
    logged = [(r.seq, r.type) for r in client.read(1, execution_id=eid, types=FOLDED)]
    assert [(e["seq"], e["type"]) for e in streamed] == logged
    assert [(e["seq"], e["type"]) for e in listed_ones] == logged


def test_a_flood_of_progress_reports_is_sampled_and_every_other_event_folded(
    hub, client, zmq_context
):
    # given the dashboard's live fold following the hub, and a running execution of 21 tasks
    eid, rounds, per_round = "ex-flood", 20, 2_000
    step = {"id": "clean", "stage": "data_cleaning", "source": "source", "after": [],
            "phases": ["run"], "parts": rounds + 1, "config": {}, "kind": "row_local",
            "columns": None}  # fmt: skip
    plan = {"execution_id": eid, "mode": "parallel", "input": {}, "fingerprints": {},
            "steps": [step], "outputs": ["clean"], "dir": "/x",
            "parts": [[n, n + 1] for n in range(rounds + 1)]}  # fmt: skip
    client.append(ExecutionRequested(execution_id=eid, stages=["data_cleaning"],
                                     input_data="/nowhere.parquet"))  # fmt: skip
    client.append(ExecutionStarted(execution_id=eid, mode="parallel", plan=plan))
    live = Live(client.endpoints, zmq_context).start()
    try:
        assert live.ready.wait(10)
        # when its tasks are dispatched amid far more progress reports than the dashboard takes
        for n in range(rounds):
            client.append(StageDispatched(execution_id=eid, stage="data_cleaning", step="clean",
                                          task_id=f"t-{n}", partition=n))  # fmt: skip
            reports = [
                StageProgress(execution_id=eid, stage="data_cleaning", step="clean",
                              worker="w-1", partition=n, fraction=(i + 1) / per_round)
                for i in range(per_round)
            ]  # fmt: skip
            for i in range(0, per_round, 500):
                client.publish_many(reports[i : i + 500])
        client.append(StageDispatched(execution_id=eid, stage="data_cleaning",
                                             step="clean", task_id="t-end", partition=rounds))  # fmt: skip
        # then it reaches the head (every report pushed is in the log) with every dispatch
        # folded, and only a sample of the reports
        everything = 3 + rounds * (per_round + 1)  # every event of the test, pushed ones too
        deadline = time.monotonic() + 30
        while client.head() < everything and time.monotonic() < deadline:
            time.sleep(0.05)
        assert live.wait_for(everything, 30)
        with live.mutex:
            tasks = live.state.executions[eid].tasks
            runs = [tasks[("clean", "run", n)] for n in range(rounds + 1)]
            assert [task.status for task in runs] == ["dispatched"] * (rounds + 1)
            shown = [task.progress for task in runs]
        assert 0 < live.progress_taken < rounds * per_round
        assert all(f == 0 or f * per_round == round(f * per_round) for f in shown)
        # and, the flood over, reports are taken again: one skipped while the dashboard heard
        # afresh (the tick after a flood) is followed by one shown
        shown_at = None
        for n in range(1, 21):
            seq = client.append(StageProgress(execution_id=eid, stage="data_cleaning",
                                              step="clean", worker="w-1", partition=rounds,
                                              fraction=n / 100))  # fmt: skip
            assert live.wait_for(seq, 10)
            deadline = time.monotonic() + 2
            while shown_at is None and time.monotonic() < deadline:
                with live.mutex:
                    if runs[-1].progress == n / 100:
                        shown_at = n
                time.sleep(0.01)
            if shown_at is not None:
                break
        assert shown_at is not None
        assert shown_at <= 3
    finally:
        live.stop()


def test_a_stream_of_metric_samples_tells_the_pages_once_a_second(hub, client, zmq_context):
    # given the dashboard's live fold, and a page listening
    live = Live(client.endpoints, zmq_context).start()
    listener = live.listen()
    try:
        assert live.ready.wait(10)
        # when a program records 5,000 metric samples at once
        samples = [MetricRecorded(name="rows", value=float(i)) for i in range(5_000)]
        for i in range(0, len(samples), 500):
            client.publish_many(samples[i : i + 500])
        # then the page hears that metrics moved
        told = []
        deadline = time.monotonic() + 10
        while not told and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                notice = listener.get(timeout=0.5)
                if notice and notice.get("metrics"):
                    told.append(notice)
        assert told
    finally:
        live.drop(listener)
        live.stop()

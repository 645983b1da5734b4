"""The dashboard in a real browser (headless Chromium driven by Playwright) against a real
`porch up`: an execution appears and completes live, its DAG, timeline and reports, pause and
resume from the page, and time travel checked against `porch replay --state`. Each test writes
a screenshot of its page into docs/screenshots/ for people to look at."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path

import pytest

from actors.dashboard.info import dashboard_url
from bus.events import ExecutionRequested
from store.projections.executions import TYPES as FOLDED
from tests.porchup import PorchUp, porch
from tests.stagedata import write_sample

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "docs" / "screenshots"
WAIT_MS = 20_000
CONFIG = f"""data_dir = "state"

[workers]
count = 2

[stages]
path = [{json.dumps(str(ROOT))}]  # where `tests.slowstages` is, from the system's own folder
inching = "tests.slowstages:inching"
noop = "tests.slowstages:noop"
"""

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')"
)
if not Path(CHROMIUM).exists():
    pytest.skip(
        "no Chromium at /usr/bin/chromium (apt-get install chromium; .ci/run does)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dashboard")
    (folder / "porch.toml").write_text(CONFIG)
    write_sample(folder / "in.parquet", 2000, 7, 500)
    with PorchUp(folder, folder / "porch.toml", folder / "state") as up:
        deadline = time.monotonic() + 30
        url = None
        with up.client.subscribe(None, types=["WorkerStarted"]) as sub:
            while url is None and time.monotonic() < deadline:
                url = dashboard_url(up.data_dir)
                if url is None:
                    sub.receive(100)  # waits on the hub's socket while the dashboard starts
        assert url, up.log.read_text()
        up.url = url
        yield up


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(WAIT_MS)
    yield page
    context.close()
    assert not errors, errors


def shoot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def request(system, steps: list[dict] | None = None, mode: str = "parallel") -> str:
    eid = f"ex-dash-{uuid.uuid4().hex[:8]}"
    stages = [] if steps else ["data_cleaning", "feature_engineering", "data_aggregation",
                               "data_validation"]  # fmt: skip
    system.client.append(
        ExecutionRequested(
            execution_id=eid, stages=stages, steps=steps or [], mode=mode,
            input_data=str(system.folder / "in.parquet"),
        )
    )  # fmt: skip
    return eid


def status_json(system, *args: str) -> dict:
    done = porch(*args, "--json", "--config", str(system.config), cwd=system.folder)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_an_execution_appears_and_completes_live(system, page):
    # given the executions page, open before the execution exists
    page.goto(system.url)
    page.wait_for_selector("#live:not(.off)")
    # when an execution is requested
    eid = request(system)
    # then its row appears and turns completed without a reload
    page.wait_for_selector(f'#executions tr[data-id="{eid}"]')
    row = page.wait_for_selector(f'#executions tr[data-id="{eid}"][data-status="completed"]')
    cells = row.query_selector_all("td")
    assert "data_cleaning" in cells[2].inner_text()
    assert cells[3].inner_text() == "parallel"
    assert cells[6].inner_text().replace(",", "") == "2000"
    assert cells[7].inner_text() == "manual"
    # and the filter keeps it under its status, not under another
    page.select_option("#status-filter", "failed")
    page.wait_for_selector(f'#executions tr[data-id="{eid}"]', state="detached")
    page.select_option("#status-filter", "completed")
    page.wait_for_selector(f'#executions tr[data-id="{eid}"]')
    shoot(page, "executions")


def test_the_execution_page_shows_its_dag_timeline_and_reports(system, page):
    # given a completed execution and a failed validation
    eid = request(system)
    rule = {"name": "fast_queries", "rule": "range", "column": "TOTAL_ELAPSED_TIME", "max": 1000}
    bad = request(system, steps=[{"id": "check", "stage": "data_validation",
                                  "config": {"rules": [rule]}}])  # fmt: skip
    # when its page is open
    page.goto(f"{system.url}#/execution/{eid}")
    page.wait_for_selector('main[data-status="completed"]')
    # then the DAG has the input and each step, all completed
    view = status_json(system, "status", eid)
    nodes = page.query_selector_all(".dag .node")
    assert len(nodes) == len(view["steps"]) + 1
    assert {n.get_attribute("data-status") for n in nodes} == {"completed"}
    # and the records in and out are those `porch status` gives
    for step_id, step in view["steps"].items():
        row = page.query_selector(f'#steps-table tr[data-step="{step_id}"]')
        assert row.query_selector(".records-in").inner_text().replace(",", "") == str(
            step["records_in"]
        )
        assert row.query_selector(".records-out").inner_text().replace(",", "") == str(
            step["records_out"]
        )
    # and the timeline has a completed bar per task, on the workers that ran them
    bars = page.query_selector_all(".gantt .bar")
    assert len(bars) >= len(view["steps"])
    assert {b.get_attribute("data-status") for b in bars} == {"completed"}
    # and a task's log opens from its bar
    bars[0].click()
    page.wait_for_selector("#logs pre")
    shoot(page, "execution")
    # and a failed validation shows its rule, count and example rows
    page.goto(f"{system.url}#/execution/{bad}")
    page.wait_for_selector('main[data-status="failed"]')
    report = page.wait_for_selector('details.validation[data-step="check"][open]')
    rule_row = report.query_selector('tr.rule[data-passed="false"]')
    cells = [c.inner_text() for c in rule_row.query_selector_all("td")]
    failing = status_json(system, "status", bad)["steps"]["check"]["report"]["rules"][0]
    assert cells[0] == "fast_queries"
    assert cells[2].replace(",", "") == str(failing["failing"])
    assert cells[4].startswith("row ")
    shoot(page, "execution-failed-validation")


def test_pause_and_resume_from_the_page(system, page, tmp_path):
    # given an execution whose first step waits for a file
    gate = tmp_path / "go"
    eid = request(system, steps=[
        {"id": "wait", "stage": "inching", "config": {"wait_for": str(gate)}},
        {"id": "after", "stage": "noop", "after": ["wait"]},
    ], mode="sequential")  # fmt: skip
    page.goto(f"{system.url}#/execution/{eid}")
    page.wait_for_selector('main[data-status="running"]')
    # when pause is clicked, the acknowledgement names the event's seq, and the page turns paused
    page.click("#pause")
    page.wait_for_selector("#ack.ok")
    assert page.inner_text("#ack").startswith(f"pause of {eid} requested (seq ")
    page.wait_for_selector('main[data-status="paused"]')
    assert page.is_disabled("#pause")
    shoot(page, "execution-paused")
    # when resume is clicked, it runs again, and completes once its step may finish
    page.click("#resume")
    page.wait_for_selector('main[data-status="running"]')
    assert page.inner_text("#ack").startswith(f"resume of {eid} requested (seq ")
    gate.write_text("go")
    page.wait_for_selector('main[data-status="completed"]')
    # and the log holds the same events the CLI would have appended
    types = [r.type for r in system.client.read(1, execution_id=eid)]
    assert types.index("PauseRequested") < types.index("ExecutionPaused")
    assert types.index("ResumeRequested") < types.index("ExecutionResumed")
    # and pausing a finished execution is refused with the CLI's reason
    page.evaluate("document.getElementById('pause').disabled = false")
    page.click("#pause")
    page.wait_for_selector("#ack.err")
    assert "has already ended (completed)" in page.inner_text("#ack")


def test_time_travel_shows_the_state_porch_replay_folds(system, page):
    # given a completed execution
    eid = request(system)
    page.goto(f"{system.url}#/execution/{eid}")
    page.wait_for_selector('main[data-status="completed"]')
    # when the slider is moved to an event half way through
    slider = page.wait_for_selector("#slider")
    count = int(slider.get_attribute("max")) + 1
    index = count // 2
    page.evaluate(
        "i => { const s = document.getElementById('slider'); s.value = i;"
        " s.dispatchEvent(new Event('input')); }",
        index,
    )
    seq = page.wait_for_selector("#travel-view[data-seq]").get_attribute("data-seq")
    # then it shows the state `porch replay --state ID --at SEQ` folds at that seq
    replayed = status_json(system, "replay", "--state", eid, "--at", seq)
    assert page.inner_text("#travel-status").replace(" ", "_") == replayed["status"]
    for step_id, step in replayed["steps"].items():
        row = page.query_selector(f'#travel-steps tr[data-step="{step_id}"]')
        assert row.get_attribute("data-status") == step["status"], step_id
    assert count == len(list(system.client.read(1, execution_id=eid, types=FOLDED)))
    shoot(page, "time-travel")


def test_an_alert_appears_live_and_is_acknowledged_and_resolved(system, page):
    # given the alerts page and a rule on a custom metric
    page.goto(f"{system.url}#/alerts")
    page.wait_for_selector("#alerts tbody tr")
    added = porch("alerts", "add-rule", "dash-hot", "--metric", "dash_temperature", "--custom",
                  "--condition", "greater_than", "--threshold", "50", "--severity", "high",
                  "--config", str(system.config), cwd=system.folder)  # fmt: skip
    assert added.returncode == 0, added.stderr
    # when a sample goes over the threshold, the alert shows up without a reload
    published = porch("publish", "MetricRecorded", "name=dash_temperature", "value=90",
                      "--config", str(system.config), cwd=system.folder)  # fmt: skip
    assert published.returncode == 0, published.stderr
    row = page.wait_for_selector('#alerts tr[data-state="active"]')
    alert_id = row.get_attribute("data-id")
    # then Acknowledge appends AlertAcknowledged, and the row turns acknowledged
    row.query_selector(".ack-button").click()
    page.wait_for_selector(f'#alerts tr[data-id="{alert_id}"][data-state="acknowledged"]')
    assert page.inner_text("#ack").startswith(f"alert {alert_id} acknowledged (seq ")
    shoot(page, "alerts")
    # and Resolve resolves it
    page.click(f'#alerts tr[data-id="{alert_id}"] .resolve-button')
    page.wait_for_selector(f'#alerts tr[data-id="{alert_id}"][data-state="resolved"]')
    types = [r.type for r in system.client.read(1, types=["AlertAcknowledged", "AlertResolved"])]
    assert types == ["AlertAcknowledged", "AlertResolved"]


def test_schedules_and_metrics_pages(system, page):
    # given a schedule
    added = porch("schedule", "add", "dash-nightly", "--cron", "0 2 * * *", "--input",
                  str(system.folder / "in.parquet"), "--config", str(system.config),
                  cwd=system.folder)  # fmt: skip
    assert added.returncode == 0, added.stderr
    # when its page is open, it shows its next fire times; pausing it is an event
    page.goto(f"{system.url}#/schedules")
    row = page.wait_for_selector('#schedules tr[data-id="dash-nightly"][data-state="active"]')
    assert "2:00:00" in row.inner_text()
    shoot(page, "schedules")
    # (a locator: the live list may redraw the row between finding it and clicking it)
    page.locator('#schedules tr[data-id="dash-nightly"] button', has_text="Pause").click()
    page.wait_for_selector('#schedules tr[data-id="dash-nightly"][data-state="paused"]')
    assert page.inner_text("#ack").startswith("paused schedule dash-nightly (seq ")
    # and the metrics page draws its charts from the monitor's series (of a run of its own)
    before = len(list(system.client.read(1, types=["ExecutionCompleted"])))
    request(system)
    system.wait_for("ExecutionCompleted", before + 1)
    page.goto(f"{system.url}#/metrics")
    page.wait_for_selector(
        '.chartbox[data-title="records per second"] polyline, .chartbox[data-title="records per second"] circle',
        state="attached",  # a line of one sample is drawn, though it has no area to be seen
    )
    shoot(page, "metrics")

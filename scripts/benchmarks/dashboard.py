"""Dashboard figures: the hub's durable ingest and latency while a `porch dashboard` and three
headless Chromium pages follow an execution, beside the same without them, in the same run.

The work is the hub group's (`hub.ingest_durable`, `hub.latency_p*_at_5k`): the same producer,
subscriber and real hub process, beside the hub alone. With the dashboard, `porch dashboard`
runs against that hub and three browsers (one Chromium each) have the page of the execution the
ingest's events name open, so every notice about it (at most one every 150 ms) brings each page
that execution, its timeline and its events, and each page draws them; `_no_page` is the
dashboard with no page open. The runs alternate (with, without,
with, ...) and each figure is the median of its own runs.
"""

from __future__ import annotations

import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from bus.client import Client
from bus.events import ExecutionRequested, StageDispatched
from scripts.benchmarks.common import Child, line, median, percentile
from scripts.benchmarks.hub import Around, ingest_once, latency_once, start_hub
from scripts.benchmarks.hubprocs import EXECUTION_ID

CHROMIUM: Final = "/usr/bin/chromium"
CHROMIUM_ARGS: Final = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
BROWSERS: Final = 3
WAIT_MS: Final = 30_000


def unavailable() -> str | None:
    """Why the browsers cannot run here, or None when they can."""
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    return None


class Browsers:
    """Headless Chromiums, each with one page, kept for the whole group (idle between runs)."""

    def __init__(self, count: int) -> None:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        self._browsers: list[Any] = []
        self.pages: list[Any] = []
        self.requests = 0
        try:
            for _ in range(count):
                browser = self._playwright.chromium.launch(
                    executable_path=CHROMIUM, args=CHROMIUM_ARGS
                )
                self._browsers.append(browser)
                page = browser.new_page()
                page.set_default_timeout(WAIT_MS)
                page.on("request", self._count)
                self.pages.append(page)
        except BaseException:
            self.close()
            raise

    def _count(self, request: Any) -> None:
        path = urllib.parse.urlsplit(request.url).path
        if path.startswith("/api/") and path != "/api/events":  # the notices' stream is not one
            self.requests += 1

    def follow(self, url: str, execution_id: str) -> None:
        """Open the execution's page in every browser; return once each shows it, live."""
        for page in self.pages:
            page.goto(f"{url}#/execution/{execution_id}")
        for page in self.pages:
            page.wait_for_selector("main[data-status]")
            page.wait_for_selector("#live:not(.off)")

    def leave(self) -> None:
        for page in self.pages:
            page.goto("about:blank")

    def close(self) -> None:
        for browser in self._browsers:
            browser.close()
        self._playwright.stop()


@contextmanager
def dashboard(data_dir: Path) -> Iterator[str]:
    """`porch dashboard` against the data dir's hub, as a user starts it; yields its URL."""
    child = Child([sys.executable, "-m", "actors.cli", "dashboard", "--data-dir", str(data_dir)])
    try:
        assert child.proc.stdout is not None
        said = child.proc.stdout.readline()  # "porch dashboard: URL" once it serves
        if not said.startswith("porch dashboard: "):
            err = child.proc.stderr.read() if child.proc.stderr else ""
            raise RuntimeError(f"porch dashboard did not start: {err.strip()[-500:]}")
        yield said.split(": ", 1)[1].strip()
    finally:
        child.stop()


def followed(browsers: Browsers | None) -> Around:
    """What the hub's timed runs run around: `porch dashboard`, and the browsers (if any) on
    the page of the execution the events name (requested first, so the page shows it)."""

    @contextmanager
    def around(data_dir: Path) -> Iterator[None]:
        with Client.local(data_dir) as client:
            client.append(
                ExecutionRequested(
                    execution_id=EXECUTION_ID, stages=["feature_engineering"], input_data="-"
                )
            )
        with dashboard(data_dir) as url:
            if browsers is None:
                yield
                return
            browsers.follow(url, EXECUTION_ID)
            try:
                yield
            finally:
                browsers.leave()

    return around


def screen_latency(browsers: Browsers, count: int) -> list[float]:
    """ms from appending an event of the execution a page follows (a task dispatched) to the
    page showing it (its time-travel label naming the event's seq), one event at a time."""
    with tempfile.TemporaryDirectory(prefix="porch-bench-") as tmp:
        data_dir = Path(tmp)
        hub = start_hub(data_dir, bare=False)
        try:
            with Client.local(data_dir) as client, dashboard(data_dir) as url:
                client.append(
                    ExecutionRequested(
                        execution_id=EXECUTION_ID, stages=["feature_engineering"], input_data="-"
                    )
                )
                page = browsers.pages[0]
                page.goto(f"{url}#/execution/{EXECUTION_ID}")
                page.wait_for_selector("main[data-status]")
                page.wait_for_selector("#live:not(.off)")
                shows = "seq => document.getElementById('slider-label').textContent"
                shows += ".startsWith('seq ' + seq + ' ')"
                out = []
                for i in range(count):
                    time.sleep(0.3)  # apart: each is the first notice after a quiet page
                    start = time.perf_counter()
                    seq = client.append(
                        StageDispatched(
                            execution_id=EXECUTION_ID, stage="feature_engineering",
                            step="features", task_id=f"probe-{i}", partition=i,
                        )
                    )  # fmt: skip
                    page.wait_for_function(shows, arg=seq, polling=5)
                    out.append((time.perf_counter() - start) * 1000)
                page.goto("about:blank")
                return out
        finally:
            hub.stop()


def run(quick: bool) -> None:
    reason = unavailable()
    if reason is not None:
        print(f"scripts/bench: dashboard figures skipped: {reason}", file=sys.stderr, flush=True)
        return
    from playwright.sync_api import Error as PlaywrightError

    reps = 1 if quick else 5  # the ingest moves by a few per cent from run to run
    latency_reps = 1 if quick else 5  # the latency is the noisier figure, and cheap to repeat
    count = 30_000 if quick else 300_000
    probes = 2_000 if quick else 15_000
    try:
        browsers = Browsers(BROWSERS)
    except PlaywrightError as exc:
        reason = f"Chromium at {CHROMIUM} did not start: {str(exc).strip().splitlines()[0]}"
        print(f"scripts/bench: dashboard figures skipped: {reason}", file=sys.stderr, flush=True)
        return
    try:
        watched, unwatched = followed(browsers), followed(None)
        with_pages, no_page, alone, requests = [], [], [], []
        for _ in range(reps):  # interleaved: the machine's drift falls on all three alike
            before = browsers.requests
            with_pages.append(ingest_once(count, 1, bare=False, around=watched))
            requests.append(browsers.requests - before)
            no_page.append(ingest_once(count, 1, bare=False, around=unwatched))
            alone.append(ingest_once(count, 1, bare=False))
        line("dashboard.hub_ingest_durable", median(with_pages), "events/s", median(alone))
        line("dashboard.hub_ingest_durable_no_page", median(no_page), "events/s", median(alone))
        line("dashboard.page_api_requests", median(requests), "requests")
        # the noise the two ratios above are read against: how far the hub alone moved
        spread = (max(alone) - min(alone)) / median(alone) * 100
        line("dashboard.hub_ingest_alone_spread", spread, "%")

        lat_with, lat_alone = [], []
        for _ in range(latency_reps):
            lat_with.append(latency_once(probes, 5000, bare=False, around=watched))
            lat_alone.append(latency_once(probes, 5000, bare=False))
        shown = screen_latency(browsers, 10 if quick else 40)
        line("dashboard.event_to_screen_p50", percentile(shown, 50), "ms")
        line("dashboard.event_to_screen_p95", percentile(shown, 95), "ms")
        for q in (50, 99):
            line(
                f"dashboard.hub_latency_p{q}_at_5k",
                median([percentile(x, q) for x in lat_with]),
                "ms",
                median([percentile(x, q) for x in lat_alone]),
            )
    finally:
        browsers.close()

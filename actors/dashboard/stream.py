"""What a page hears on ``/api/events`` (server-sent events): a notice when what it shows may
have changed, at most one per `NOTICE_EVERY_S`. A stream that follows an execution (the page
of one) carries what that page shows in the notice itself, so following costs no request."""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Iterator
from typing import Any, Final

from actors.dashboard.live import NOTICE_IDS_MAX, Live
from actors.dashboard.pages import Pages
from actors.errors import UsageError
from bus.errors import BusError

log = logging.getLogger("porch.dashboard")
KEEPALIVE_S: Final = 15.0
# a page hears at most one notice this often: the first at once, what comes within the interval
# after it as one notice at its end (a busy execution redraws its page ~7 times a second, and
# an event still reaches the screen within the 200 ms the dashboard promises)
NOTICE_EVERY_S: Final = 0.15

Listener = queue.SimpleQueue[dict[str, Any] | None]


def notices(live: Live, pages: Pages, listener: Listener, follow: str | None) -> Iterator[Any]:
    """The stream's notices, from a hello on; None when a keepalive is due. It ends when the
    dashboard stops or lets the listener go. With ``follow``, a notice about that execution
    (and the hello) holds ``page``: `Pages.page` from where this stream's last one left off."""
    known = {"from": "0", "epoch": "0", "timeline": "0"}

    def with_page(notice: dict[str, Any]) -> dict[str, Any]:
        if follow is None or not (
            notice.get("hello") or notice.get("all") or follow in notice.get("executions", ())
        ):
            return notice
        try:
            shown = pages.page(follow, known)
        except (UsageError, BusError) as exc:  # not in the log yet, or the hub is away
            return {**notice, "page_error": str(exc)}
        except Exception as exc:  # a bug must not end the stream: say it, go on
            log.exception("dashboard: the page of %s failed", follow)
            return {**notice, "page_error": f"internal error: {type(exc).__name__}: {exc}"}
        listed = shown["events"]
        known.update(
            {"from": str(listed["frozen"]), "epoch": str(listed["epoch"]),
             "timeline": str(shown["timeline_version"])}
        )  # fmt: skip
        return {**notice, "page": shown}

    yield with_page({"seq": live.seq, "hello": True})
    sent = 0.0
    while True:
        try:
            notice = listener.get(timeout=KEEPALIVE_S)
        except queue.Empty:
            yield None
            continue
        if notice is None:
            return
        wait_s = sent + NOTICE_EVERY_S - time.monotonic()
        if wait_s > 0 and live.stopping.wait(wait_s):
            return
        yield with_page(merge(notice, listener))
        sent = time.monotonic()


def merge(notice: dict[str, Any], listener: Listener) -> dict[str, Any]:
    """The notice and every one already waiting after it, as one: a page refreshes once."""
    merged = dict(notice)
    ids: dict[str, None] = dict.fromkeys(notice.get("executions", ()))
    while True:
        try:
            more = listener.get_nowait()
        except queue.Empty:
            break
        if more is None:
            listener.put(None)
            break
        ids.update(dict.fromkeys(more.get("executions", ())))
        for key, value in more.items():
            if key != "executions" and value:
                merged[key] = value
    if ids:
        merged["executions"] = list(ids)[:NOTICE_IDS_MAX]
        merged["all"] = merged.get("all", False) or len(ids) > NOTICE_IDS_MAX
    return merged

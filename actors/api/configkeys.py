"""Every setting of ``porch.toml``, declared once: its table, key, type, default, what is allowed,
its ``PORCH_*`` variable and the flags of each command that set it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from actors.shared.snapshotter import EVERY_EVENTS, EVERY_S
from bus.protocol import PUB_HWM
from store.log import DEFAULT_SEGMENT_BYTES

Kind = Literal["int", "float", "str", "bool", "path", "list"]
ACTOR_COMMANDS: Final = ("up", "hub", "orchestrator", "worker", "scheduler", "monitor")


@dataclass(frozen=True, slots=True, kw_only=True)
class Setting:
    """One key of one table. ``flags`` maps a command (``up``, ``worker``, ...) to its option;
    ``negate``: the flag (``--no-alerting``) sets the opposite of the key. A ``path`` read from
    the file is relative to the file's folder; from a flag or a variable, to the working
    directory. ``default`` None means one derived from other settings (see ``derived``)."""

    section: str  # "" for a top-level key
    key: str
    kind: Kind
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    above: bool = False  # ``low`` itself is not allowed
    choices: tuple[str, ...] = ()
    flags: Mapping[str, str] = field(default_factory=dict)  # "*": every command
    negate: bool = False
    derived: str = ""  # what a None default stands for, for people
    secret: bool = False  # a credential: never shown, and a file holding it must be private

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}" if self.section else self.key

    @property
    def env(self) -> str | None:
        """``PORCH_<TABLE>_<KEY>`` (``PORCH_DATA_DIR`` at the top); lists have none."""
        if self.kind == "list":
            return None
        return "_".join(
            ["PORCH", *([self.section.upper()] if self.section else []), self.key.upper()]
        )

    def allowed(self) -> str:
        """What this key takes, for an error message: 'an integer from 1 to 64'."""
        noun = {
            "int": "an integer",
            "float": "a number",
            "str": "text",
            "bool": "true or false",
            "path": "a path",
            "list": "a list of text",
        }[self.kind]
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.low is not None and self.high is not None:
            return f"{noun} from {self.low:g} to {self.high:g}" + (
                f" (above {self.low:g})" if self.above else ""
            )
        if self.low is not None:
            return f"{noun} {'>' if self.above else '>='} {self.low:g}"
        return noun

    def check(self, value: Any) -> Any:
        """The value if it is allowed (an int for a float key becomes a float), else None."""
        if self.kind == "bool":
            return value if type(value) is bool else None
        if self.kind == "int":
            if type(value) is not int:
                return None
        elif self.kind == "float":
            if type(value) not in (int, float) or not math.isfinite(value):
                return None
            value = float(value)
        elif self.kind in ("str", "path"):
            if not isinstance(value, str) or (self.kind == "path" and not value):
                return None
            if self.choices and value not in self.choices:
                return None
            return value
        elif self.kind == "list":
            ok = isinstance(value, list) and all(isinstance(v, str) and v for v in value)
            return list(value) if ok else None
        if self.low is not None and (value < self.low or (self.above and value == self.low)):
            return None
        if self.high is not None and value > self.high:
            return None
        return value


def _s(section: str, key: str, kind: Kind, default: Any, help: str, **more: Any) -> Setting:
    return Setting(section=section, key=key, kind=kind, default=default, help=help, **more)


UP_HUB: Final = {"hub": "--insecure", "up": "--insecure"}
SETTINGS: Final[tuple[Setting, ...]] = (
    _s("", "data_dir", "path", ".porch", "the log, artifacts and sockets",
       flags={"*": "--data-dir"}),
    # the hub
    _s("hub", "fsync", "str", "batch", "fsync policy", choices=("always", "batch", "never"),
       flags={"hub": "--fsync"}),
    _s("hub", "batch_max", "int", 512, "most events per group commit", low=1),
    _s("hub", "segment_bytes", "int", DEFAULT_SEGMENT_BYTES, "start a new log segment after this size", low=1),
    _s("hub", "pub_hwm", "int", PUB_HWM, "messages a slow subscriber may lag", low=1),
    _s("hub", "dedup_window", "int", 100_000, "recent event ids kept to drop a resent one", low=0),
    _s("hub", "marker_interval_s", "float", 1.0, "seconds between the hub's seq markers", low=0, above=True),
    _s("hub", "ingest", "str", None, "bind ingest here", flags={"hub": "--ingest"},
       derived="the data dir's ipc socket"),
    _s("hub", "publish", "str", None, "bind publish here", flags={"hub": "--publish"},
       derived="the data dir's ipc socket"),
    _s("hub", "request", "str", None, "bind the request socket here", flags={"hub": "--request"},
       derived="the data dir's ipc socket"),
    _s("hub", "insecure", "bool", False, "bind non-loopback TCP without CURVE", flags=UP_HUB),
    _s("hub", "archive", "str", "archive", "what happens to old log segments",
       choices=("archive", "delete", "off")),
    _s("hub", "archive_after_s", "float", 7 * 86400.0, "segments older than this leave the live log", low=0),
    _s("hub", "archive_max_bytes", "int", 0, "bound of the live log's bytes (0: none)", low=0),
    _s("hub", "archive_check_s", "float", 60.0, "how often the hub looks", low=0, above=True),
    _s("hub", "archive_to", "str", "", "move archived files to this s3://BUCKET/PREFIX (empty: keep them in DATA_DIR/archive)"),
    # the orchestrator
    _s("orchestrator", "tasks", "str", None, "where the orchestrator hands out tasks",
       derived="the data dir's ipc socket"),
    _s("orchestrator", "insecure", "bool", False, "bind the tasks socket on TCP without CURVE",
       flags={"orchestrator": "--insecure", "up": "--insecure"}),
    _s("orchestrator", "checkpoint_dir", "path", None,
       "where artifacts are written: a folder, or s3://BUCKET/PREFIX",
       flags={"orchestrator": "--checkpoint-dir", "up": "--checkpoint-dir"},
       derived="DATA_DIR/checkpoints"),
    _s("orchestrator", "lease_ms", "int", 10_000, "a task's lease", low=100, high=3_600_000,
       flags={"orchestrator": "--lease-ms"}),
    _s("orchestrator", "plan_workers", "int", 2, "workers to plan partitions for (porch up: the local workers)",
       low=1, flags={"orchestrator": "--workers"}),
    _s("orchestrator", "hybrid_min_rows", "int", 250_000, "hybrid mode: rows per partition worth splitting for",
       low=1, flags={"orchestrator": "--hybrid-min-rows"}),
    # workers
    _s("workers", "count", "int", 2, "workers porch up starts", low=0, flags={"up": "--workers"}),
    _s("workers", "name", "str", "", "a worker's name (default worker-HOST-PID)", flags={"worker": "--name"}),
    _s("workers", "prefetch", "int", 8, "tasks a worker holds ready", low=1, high=64,
       flags={"worker": "--prefetch"}),
    _s("workers", "heartbeat_s", "float", 1.0, "seconds between heartbeats", low=0.05, high=60),
    _s("workers", "compress_frames", "bool", True, "LZ4-compress frames over 32 MB between stages",
       flags={"worker": "--no-compress-frames"}, negate=True),
    # the scheduler
    _s("scheduler", "max_concurrent", "int", 3, "scheduled executions running at once", low=1,
       flags={"up": "--max-concurrent", "scheduler": "--max-concurrent"}),
    _s("scheduler", "schedules", "path", None, "a schedules file to add or update at start",
       flags={"up": "--schedules", "scheduler": "--schedules"}, derived="none"),
    # the monitor
    _s("monitor", "retention_hours", "float", 24.0, "metrics history kept", low=0, high=24 * 366,
       above=True, flags={"up": "--retention-hours", "monitor": "--retention-hours"}),
    _s("monitor", "raw_window_minutes", "float", 60.0, "raw samples kept this long", low=0,
       flags={"up": "--raw-window-minutes", "monitor": "--raw-window-minutes"}),
    _s("monitor", "sampling_interval_s", "float", 10.0, "host samples and rule checks", low=0.05,
       high=3600, flags={"up": "--sampling-interval", "monitor": "--sampling-interval"}),
    _s("monitor", "alerting", "bool", True, "evaluate alert rules",
       flags={"up": "--no-alerting", "monitor": "--no-alerting"}, negate=True),
    _s("monitor", "http_port", "int", 0, "loopback HTTP port (0: any free)", low=0, high=65535,
       flags={"up": "--http-port", "monitor": "--http-port"}),
    _s("monitor", "webhooks", "list", [], "POST each new alert as JSON to these URLs",
       flags={"up": "--webhook", "monitor": "--webhook"}),
    _s("monitor", "notify_commands", "list", [], "run these with each new alert as JSON on stdin",
       flags={"up": "--notify-command", "monitor": "--notify-command"}),
    # keys, snapshots, retention
    _s("curve", "keys", "path", None, "CURVE key folder (porch keys generate)", derived="no encryption"),
    _s("curve", "client", "str", "client", "which client key pair this host uses"),
    _s("snapshots", "every_events", "int", EVERY_EVENTS, "snapshot after this many events (0: never)", low=0),
    _s("snapshots", "every_s", "float", EVERY_S, "or after this long", low=0, above=True),
    _s("retention", "enabled", "bool", True, "the orchestrator removes old artifacts"),
    _s("retention", "keep_last", "int", 3, "newest finished executions per pipeline kept", low=0),
    _s("retention", "keep_days", "float", 7.0, "executions finished within this many days kept", low=0),
    _s("retention", "remove_outputs", "bool", False, "final outputs of the others go too"),
    _s("retention", "interval_s", "float", 600.0, "how often the orchestrator looks", low=0, above=True),
    # the object store of s3:// locations (else the AWS_* variables)
    _s("s3", "endpoint", "str", "", "http(s)://HOST:PORT of an S3-compatible store (empty: AWS)"),
    _s("s3", "region", "str", "", "the bucket's region (empty: AWS_REGION, else us-east-1)"),
    _s("s3", "access_key_id", "str", "", "access key (empty: AWS_ACCESS_KEY_ID)", secret=True),
    _s("s3", "secret_access_key", "str", "", "secret key (empty: AWS_SECRET_ACCESS_KEY)", secret=True),
    _s("s3", "session_token", "str", "", "session token (empty: AWS_SESSION_TOKEN)", secret=True),
    _s("s3", "connect_timeout_s", "float", 3.0, "seconds to connect before a request fails", low=0, high=3600, above=True),
    _s("s3", "request_timeout_s", "float", 30.0, "seconds a request may take before it fails", low=0, high=3600, above=True),
)  # fmt: skip
BY_NAME: Final = {s.name: s for s in SETTINGS}
STAGES: Final = "stages"  # the table of local stages: NAME = "module:function", and ``path``
STAGE_PATH: Final = "path"
SECTIONS: Final = (*dict.fromkeys(s.section for s in SETTINGS if s.section), STAGES)
STAGE_FLAGS: Final = ("up", "orchestrator", "worker")  # commands taking --stage


def keys_of(section: str) -> list[str]:
    return [s.key for s in SETTINGS if s.section == section]

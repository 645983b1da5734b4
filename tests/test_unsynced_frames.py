"""Frames between stages are not synced: stamped with the boot id, hashed when read after one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from store import artifacts, deltas, fsutil, powercut


@pytest.fixture
def boot():
    """Set this process's boot id (a machine restart is a new one); the real one afterwards."""
    yield artifacts.set_boot_id
    artifacts.set_boot_id(None)


def _frame(rows: int = 4000) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    return pd.DataFrame({"ID": np.arange(rows), "X": rng.random(rows), "S": ["a b"] * rows})


def _zero_first_half(path: str) -> None:
    """What a power cut may leave of an unsynced file: its blocks zeros, its footer whole."""
    powercut._damage(Path(path))


def test_a_frame_is_written_without_a_sync_and_a_byte_artifact_with_one(tmp_path, boot):
    # given a crash test's journal of every directory sync
    boot("boot-a")
    journal = powercut.SyncJournal(tmp_path / "sync.journal")
    fsutil.observe_syncs(journal)
    try:
        # when a task writes a frame, then nothing is synced
        artifacts.write_frame(tmp_path / "step" / "map-0000.arrow", _frame())
        assert powercut.read(journal.path)[1].get(str(tmp_path / "step")) is None
        # when it writes a partial, then that is
        partial = artifacts.write_bytes(tmp_path / "step" / "map-0000.partial", b"stats")
        assert Path(partial.path).name in powercut.read(journal.path)[1][str(tmp_path / "step")]
    finally:
        fsutil.observe_syncs(None)


def test_a_frame_written_again_after_a_loss_is_synced(tmp_path, boot):
    # given a crash test's journal of every directory sync
    boot("boot-a")
    journal = powercut.SyncJournal(tmp_path / "sync.journal")
    fsutil.observe_syncs(journal)
    try:
        # when a task that recomputes a lost frame writes it (its spec says durable)
        info = artifacts.write_frame(tmp_path / "step" / "run-0000.arrow", _frame(), durable=True)
        # then it is synced whole, its directory with it, and still stamped (hashed if read
        # later); a power cut leaves it as it is
        sizes, names = powercut.read(journal.path)
        assert Path(info.path).name in names[str(tmp_path / "step")]
        assert sizes[info.path] == info.bytes
        assert powercut.cut(journal.path, tmp_path / "step", ".seg")["damaged"] == 0
        boot("boot-b")  # the machine restarted: the frame is hashed as it is read
        assert artifacts.read_frames([info.path], hashes={info.path: info.sha256}).shape[0] == 4000
    finally:
        fsutil.observe_syncs(None)


def test_a_frame_from_before_a_restart_is_used_when_its_hash_matches_and_refused_when_not(
    tmp_path, boot
):
    # given a frame written on one boot
    boot("boot-a")
    expected = _frame()
    info = artifacts.write_frame(tmp_path / "step" / "run-0000.arrow", expected)
    # on that boot it is read as it is (the page cache holds what was written)
    pd.testing.assert_frame_equal(artifacts.read_frames([info.path]), expected)
    # when the machine has restarted since, then it is read when its hash is what was recorded
    boot("boot-b")
    hashes = {info.path: info.sha256}
    pd.testing.assert_frame_equal(artifacts.read_frames([info.path], hashes=hashes), expected)
    # and refused when its hash is not known
    with pytest.raises(artifacts.ArtifactError, match="hash is not known"):
        artifacts.read_frames([info.path])
    # and refused, not read as zeros, once the power cut has damaged it
    _zero_first_half(info.path)
    with pytest.raises(artifacts.ArtifactError, match="damaged"):
        artifacts.read_frames([info.path], hashes=hashes)
    with pytest.raises(artifacts.ArtifactError, match="damaged"):
        artifacts.write_parquet(tmp_path / "output" / "step.parquet", [info.path], hashes)
    assert not (tmp_path / "output" / "step.parquet").exists()


def test_a_delta_written_after_a_restart_checks_a_base_from_before_it(tmp_path, boot):
    # given a base written before a restart, and a delta over it written after
    boot("boot-a")
    base = artifacts.write_frame(tmp_path / "clean" / "run-0000.arrow", _frame())
    boot("boot-b")
    read = artifacts.read_frames([base.path], hashes={base.path: base.sha256})
    out = read.assign(Y=read["X"] * 2)
    kept = deltas.kept_columns(deltas.guard(read), out)
    delta = artifacts.write_frame(
        tmp_path / "feat" / "run-0000.arrow",
        out,
        base=deltas.Base(base.path, base.sha256, tuple(kept)),
    )
    pd.testing.assert_frame_equal(artifacts.read_frames([delta.path]), out)
    # when the base turns out damaged, then the delta is refused, though it is of this boot
    _zero_first_half(base.path)
    with pytest.raises(artifacts.ArtifactError, match="damaged"):
        artifacts.read_frames([delta.path])


def test_a_power_cut_damages_every_frame_it_keeps(tmp_path):
    # given a frame listed by a directory sync (a later write in its directory)
    journal = powercut.SyncJournal(tmp_path / "sync.journal")
    root = tmp_path / "data"
    (root / "step").mkdir(parents=True)
    frame = root / "step" / "map-0000.arrow"
    frame.write_bytes(b"ARROW1\0\0" + b"x" * 100 + b"FOOTER")
    journal.synced_dir(root, journal.listing(root))
    journal.synced_dir(root / "step", journal.listing(root / "step"))
    # when the power is cut, then it is there, its magic and footer whole, its data zeros
    done = powercut.cut(journal.path, root, ".seg")
    data = frame.read_bytes()
    assert done == {"truncated_bytes": 0, "removed": 0, "damaged": 1}
    assert data.startswith(b"ARROW1")
    assert data.endswith(b"FOOTER")
    assert data[8 : len(data) // 2] == bytes(len(data) // 2 - 8)

"""A power cut between two stages: the frame the first wrote, never synced, is damaged or gone
when the machine is back; the running execution recomputes it on its own and completes with
what plain pandas gives. Real processes, started as a user starts them, twice on one data dir."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest

from actors.api.system import System
from bus.events import ExecutionRequested
from stages.pipeline import build
from stages.pipeline import run as run_pipeline
from stages.registry import Registry
from store import powercut
from tests.conftest import run_porch
from tests.slowstages import STAGES
from tests.stagedata import write_sample
from tests.watching import Watched


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    return write_sample(tmp_path_factory.mktemp("input") / "history.parquet", 2000, 7, 1000)


def _system(data_dir: Path) -> Watched:
    return Watched(System(data_dir=data_dir, workers=1, stages=STAGES, log=subprocess.DEVNULL))


@pytest.mark.parametrize(
    ("mode", "cut"), [("sequential", "damaged"), ("sequential", "deleted"), ("parallel", "damaged")]
)
def test_a_frame_lost_in_a_power_cut_is_recomputed_and_the_execution_completes(
    tmp_path, sample, monkeypatch, mode, cut
):
    # given cleaning then feature engineering, held in between by a step that waits for a file
    # (it passes its rows through), run on one boot of the machine (in parallel: two parts, and
    # cleaning's global statistics in map, reduce, apply and report tasks)
    gate = tmp_path / "open"
    steps = [
        {"id": "clean", "stage": "data_cleaning"},
        {"id": "gate", "stage": "chatty", "after": ["clean"], "config": {"wait_for": str(gate)}},
        {"id": "features", "stage": "feature_engineering", "after": ["gate"]},
    ]
    monkeypatch.setenv(powercut.BOOT_ENV, "boot-before")
    first = _system(tmp_path / "porch")
    try:
        first.client.append(ExecutionRequested(execution_id="e1", stages=[], steps=steps,
                                               input_data=str(sample), mode=mode,
                                               partitions=2))  # fmt: skip
        first.wait(lambda seen: first.of("StageStarted", execution_id="e1", step="gate"))
        phase = "run" if mode == "sequential" else "apply"
        cleaned = first.of("StageCompleted", execution_id="e1", step="clean", phase=phase)[0]
    finally:
        first.stop()
    # when the power is cut there: the cleaned frame, never synced, is damaged or gone
    frame = Path(cleaned["artifact"])
    if cut == "damaged":
        powercut._damage(frame)
    else:
        frame.unlink()
    # and the machine comes back (a new boot) and porch with it
    monkeypatch.setenv(powercut.BOOT_ENV, "boot-after")
    gate.touch()
    second = _system(tmp_path / "porch")
    try:
        second.wait(
            lambda seen: (
                second.of("ExecutionCompleted", execution_id="e1")
                or second.of("ExecutionFailed", execution_id="e1")
            ),
            timeout=60,
        )
        # then the reader's failure named the lost frame, the log says its producer was
        # reopened, and the execution completed without anyone asking
        assert second.of("ExecutionFailed", execution_id="e1") == []
        lost = [e for e in second.of("StageFailed", execution_id="e1") if e.get("lost")]
        assert [e["lost"] for e in lost][:1] == [str(frame)]
        (reopened,) = second.of("StageInvalidated", execution_id="e1")
        assert (reopened["step"], reopened["phase"], reopened["partition"]) == (
            "clean",
            phase,
            cleaned["partition"],
        )
        assert (reopened["attempt"], reopened["artifact"]) == (1, str(frame))
        again = second.of("StageCompleted", execution_id="e1", step="clean")[-1]
        assert (again["phase"], again["partition"], again["attempt"]) == (
            phase,
            cleaned["partition"],
            2,
        )
        (done,) = second.of("ExecutionCompleted", execution_id="e1")
        assert done["records_processed"] == 2000
        # and its output is what the two stages give called directly on the input
        registry = Registry.default()
        pipeline = build(["data_cleaning", "feature_engineering"], registry=registry)
        want = run_pipeline(pipeline, pd.read_parquet(sample))[0]["feature_engineering"]
        got = pd.read_parquet(done["outputs"]["features"]["path"])
        pd.testing.assert_frame_equal(got, want.reset_index(drop=True), check_dtype=False)
        # and `porch replay` shows the reopening
        replay = run_porch("replay", "--execution", "e1", data_dir=tmp_path / "porch")
        assert " StageInvalidated " in replay.stdout, replay.stderr
    finally:
        second.stop()

"""Progress: the built-in stages say how far they are, the runner turns that into StageProgress
events, and `porch status` and `porch run --wait` show a running stage's last progress."""

from __future__ import annotations

import json
import subprocess

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actors.api.system import System
from bus.events import ExecutionRequested
from stages import progress
from stages.aggregation import STAGE as AGGREGATION
from stages.cleaning import STAGE as CLEANING
from stages.features import STAGE as FEATURES
from stages.partition import run_partitioned, split
from stages.sample import generate
from stages.validation import STAGE as VALIDATION
from tests.conftest import PORCH, run_porch
from tests.slowstages import STAGES
from tests.watching import Watched


def _heard(stage, df: pd.DataFrame, parts: int = 1) -> tuple[pd.DataFrame, list]:
    heard: list[tuple[float, str]] = []
    with progress.listening(lambda fraction, message: heard.append((fraction, message))):
        outputs, _ = run_partitioned(stage, split(df, parts))
    return pd.concat(outputs, ignore_index=True), heard


@pytest.mark.parametrize("parts", [1, 3])
def test_the_built_in_stages_report_progress_from_start_to_end(parts):
    # given query history, through each built-in stage in pipeline order
    frame = pd.concat(list(generate(3000, seed=2)), ignore_index=True)
    for stage in (CLEANING, FEATURES, AGGREGATION, VALIDATION):
        # when a listener listens
        frame, heard = _heard(stage, frame, parts)
        # then it hears a growing fraction that ends at 1, with what the stage is doing
        fractions = [f for f, _ in heard]
        assert len(heard) >= 3, (stage.name, heard)
        assert fractions == sorted(fractions), (stage.name, heard)
        assert fractions[-1] == 1.0, (stage.name, heard)
        assert all(0.0 <= f <= 1.0 for f in fractions)
        assert any("rows" in m for _, m in heard), (stage.name, heard)
        if stage is not AGGREGATION:
            assert any(m.startswith("map") for _, m in heard), (stage.name, heard)
        if parts > 1 and stage is not AGGREGATION:
            assert any("part 3/3" in m for _, m in heard), (stage.name, heard)
    # and with nobody listening, a report does nothing
    progress.report(0.5, "nobody hears this")


@pytest.fixture
def porch(tmp_path, monkeypatch):
    monkeypatch.setenv("INCHING_WAIT_FOR", str(tmp_path / "again"))  # the workers inherit it
    running = Watched(System(data_dir=tmp_path / "porch", workers=1, stages=STAGES,
                             log=subprocess.DEVNULL))  # fmt: skip
    yield running
    running.stop()


def test_status_and_run_wait_show_a_running_stages_last_progress(porch, tmp_path):
    tiny = tmp_path / "tiny.parquet"
    pq.write_table(pa.table({"x": [1, 2, 3]}), tiny)
    data = ["--data-dir", str(porch.data_dir)]
    # given a stage that says it is half way until a file appears
    go = tmp_path / "go"
    porch.client.append(ExecutionRequested(execution_id="inch", stages=["inching"], input_data=str(tiny),
                                           config={"inching": {"wait_for": str(go)}}))  # fmt: skip
    # when its progress is in the log
    porch.wait(lambda seen: porch.of("StageProgress", execution_id="inch"))
    said = porch.of("StageProgress", execution_id="inch")[-1]  # (events of other types follow)
    assert (said["fraction"], said["message"], said["step"]) == (
        0.5,
        "half way, waiting",
        "inching",
    )
    # then status shows it, for people and as JSON
    text = run_porch("status", "inch", *data).stdout
    assert "  progress of inching: 50% half way, waiting" in text, text
    view = json.loads(run_porch("status", "inch", "--json", *data).stdout)
    assert view["steps"]["inching"]["progress"] == {"fraction": 0.5, "message": "half way, waiting"}
    go.touch()
    porch.wait(lambda seen: porch.of("ExecutionCompleted", execution_id="inch"))
    done = json.loads(run_porch("status", "inch", "--json", *data).stdout)
    assert done["steps"]["inching"]["progress"] is None
    assert "progress" not in run_porch("status", "inch", *data).stdout
    # and `porch run --wait` shows it live, while the stage runs
    again = tmp_path / "again"
    wait = subprocess.Popen([*PORCH, "run", str(tiny), "--stages", "inching", "--id", "inch-2", "--wait",
                             *data], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        for line in wait.stdout:
            if "inching: running 50% half way, waiting" in line:
                break
        else:
            raise AssertionError(wait.stderr.read())
        again.touch()
    finally:
        out, err = wait.communicate(timeout=60)
    assert wait.returncode == 0, err
    assert "inching: completed" in out

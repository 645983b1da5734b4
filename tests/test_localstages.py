"""Custom stages in one step: [stages] of porch.toml, `porch reload-stages`, and a
`porch pipeline check` that says whether the running orchestrator and workers can run a file,
and what fixes it when they cannot."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from stages.sample import write_sample
from store.projections.stagesets import StageSetsState, fold
from tests.conftest import run_porch
from tests.porchup import PorchUp, porch

CODE = {
    "shouty.py": "def shout(df, config):\n"
    '    return df.assign(WAREHOUSE_NAME=df["WAREHOUSE_NAME"].astype(str).str.upper()), {}\n',
    "dedupe.py": "def dedupe(df, config):\n    return df.head(10), {'kept': 10}\n",
}
PIPELINE = '[pipeline]\nstages = ["shout", "dedupe"]\n\n[stages]\ndedupe = "dedupe:dedupe"\n'
CONFIG = (
    'data_dir = "state"\n\n[workers]\ncount = 2\n\n[monitor]\nsampling_interval_s = 0.5\n\n'
    '[stages]\npath = ["code"]\nshout = "shouty:shout"\n'
)


def one_line_error(result) -> str:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def project(tmp_path):
    """Stage code in code/, sample data, a pipeline file with its own [stages], and a
    porch.toml that names only `shout`."""
    (tmp_path / "code").mkdir()
    for name, text in CODE.items():
        (tmp_path / "code" / name).write_text(text)
    write_sample(tmp_path / "in.parquet", 300, seed=5)
    (tmp_path / "pipe.toml").write_text(PIPELINE)
    (tmp_path / "porch.toml").write_text(CONFIG)
    return tmp_path


def started(project: Path) -> PorchUp:
    """porch up, once the orchestrator and both workers have said which stages they run."""
    up = PorchUp(project, project / "porch.toml", project / "state")
    try:
        up.wait_for("StagesLoaded", 3)
    except BaseException:
        up.stop()
        raise
    return up


def check(project: Path):
    return porch("pipeline", "check", "pipe.toml", cwd=project)


def test_a_stage_added_to_the_config_file_runs_after_reload_stages(project):
    with started(project):
        # given a pipeline whose stage only the pipeline file's own [stages] names
        line = one_line_error(check(project))
        config = project / "porch.toml"
        assert line == (
            "porch: pipeline 'pipe': stage 'dedupe' is not registered with the running"
            " orchestrator and workers (a pipeline file's [stages] is read only where the file"
            f' is loaded): add `dedupe = "dedupe:dedupe"` under [stages] in {config} (its'
            " folder under [stages] path) and run `porch reload-stages`"
        )
        # when the step it names is taken: the line goes into porch.toml
        config.write_text(CONFIG + 'dedupe = "dedupe:dedupe"\n')
        line = one_line_error(check(project))
        assert line.endswith(
            f"stage 'dedupe' is under [stages] in {config}, but the running orchestrator and"
            " workers have not loaded it: run `porch reload-stages`"
        )
        reload = porch("reload-stages", cwd=project)
        # then every actor says it runs it now, and the pipeline runs
        assert reload.returncode == 0, reload.stderr
        assert sorted(reload.stdout.splitlines()) == [
            "orchestrator: 6 stages (+dedupe)",
            "worker-1: 6 stages (+dedupe)",
            "worker-2: 6 stages (+dedupe)",
        ]
        ok = check(project)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.splitlines()[-1] == (
            "the running system can run it: the orchestrator and 2 of 2 workers know every stage"
        )
        run = porch("run", "in.parquet", "--pipeline", "pipe.toml", "--wait", "--json",
                    cwd=project)  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["status"] == "completed"
        (output,) = (project / "state" / "checkpoints").glob("*/output/dedupe.parquet")
        assert len(pd.read_parquet(output)) == 10


def test_a_reload_that_does_not_import_keeps_the_stages_and_says_why(project):
    with started(project):
        # given a config naming a module that is not there
        (project / "porch.toml").write_text(CONFIG + 'gone = "nosuchmodule:f"\n')
        # when
        reload = porch("reload-stages", "--json", cwd=project)
        # then each actor keeps what it ran, and says why in one line
        assert one_line_error(reload) == (
            "porch: 3 of 3 kept their stages; orchestrator: stage 'gone': cannot import"
            " 'nosuchmodule:f': No module named 'nosuchmodule'"
        )
        answers = json.loads(reload.stdout)["answers"]
        assert sorted(a["actor"] for a in answers) == ["orchestrator", "worker-1", "worker-2"]
        assert all("No module named 'nosuchmodule'" in a["error"] for a in answers)
        assert all("shout" in a["stages"] and "gone" not in a["stages"] for a in answers)
        # and the stages they kept still run
        run = porch("run", "in.parquet", "--stages", "shout", "--wait", "--json", cwd=project)
        assert json.loads(run.stdout)["status"] == "completed", run.stderr


def test_pipeline_check_with_no_system_checks_the_file_with_the_config_stages(project):
    (project / "pipe.toml").write_text('[pipeline]\nstages = ["shout"]\n')
    result = check(project)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (
        f"no porch system runs for data dir {project / 'state'}: checked the file only"
    )


def test_a_worker_whose_stages_do_not_import_stops_with_one_line(hub):
    result = run_porch("worker", "--stage", "gone=nosuchmodule:f", data_dir=hub.data_dir)
    assert one_line_error(result) == (
        "porch: worker worker-"
        + result.stderr.split("worker-", 1)[1].split(":", 1)[0]
        + ": its runner cannot load the stages: stage 'gone': cannot import 'nosuchmodule:f':"
        " No module named 'nosuchmodule'"
    )


@pytest.mark.parametrize(
    ("events", "orchestrator", "workers"),
    [
        ([], None, {}),
        ([("WorkerStarted", {"worker": "w1"})], None, {"w1": None}),
        ([("WorkerStarted", {"worker": "w1"}),
          ("StagesLoaded", {"actor": "w1", "role": "worker", "stages": ["b", "a"]}),
          ("StagesLoaded", {"actor": "orchestrator", "role": "orchestrator", "stages": ["a"]})],
         ["a"], {"w1": ["a", "b"]}),
        ([("WorkerStarted", {"worker": "w1"}),
          ("StagesLoaded", {"actor": "w1", "role": "worker", "stages": ["a"]}),
          ("WorkerLost", {"worker": "w1"})], None, {}),
        ([("WorkerStarted", {"worker": "w1"}),
          ("StagesLoaded", {"actor": "w1", "role": "worker", "stages": ["a"]}),
          ("WorkerLost", {"worker": "w1"}), ("WorkerReturned", {"worker": "w1"})],
         None, {"w1": ["a"]}),
        ([("WorkerStarted", {"worker": "w1"}),
          ("StagesLoaded", {"actor": "w1", "role": "worker", "stages": ["a"]}),
          ("WorkerStopped", {"worker": "w1"}), ("WorkerStarted", {"worker": "w1"})],
         None, {"w1": None}),
    ],
)  # fmt: skip
def test_the_stage_sets_fold(events, orchestrator, workers):
    state = fold((seq, {"type": kind, **fields}) for seq, (kind, fields) in enumerate(events, 1))
    assert isinstance(state, StageSetsState)
    assert state.orchestrator == orchestrator
    assert state.workers == workers

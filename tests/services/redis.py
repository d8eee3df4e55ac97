"""Redis for tests: a local redis-server (Debian package) or a testcontainers RedisContainer.

`start_local_redis(...)` is also used directly by tests that kill and restart their own
instance (persistence on, same port and directory).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass

from tests.services import CONTAINER, LOCAL, RunningService, free_port, wait_for_port
from tests.services.requirements import require_binary


def start_local_redis(
    port: int | None = None, workdir: str | None = None, *, appendonly: bool = False
) -> RunningService:
    binary = _binary()
    port = port or free_port()
    workdir = workdir or tempfile.mkdtemp(prefix="tracepipe-redis-")
    args = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--dir",
        workdir,
        "--daemonize",
        "no",
        "--protected-mode",
        "no",
        "--loglevel",
        "warning",
    ]
    if appendonly:
        # Every acknowledged write is on disk before the reply: kill -9 loses nothing acked.
        args += ["--appendonly", "yes", "--appendfsync", "always"]
    else:
        args += ["--appendonly", "no"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=workdir)
    try:
        wait_for_port("127.0.0.1", port, proc=proc)
        _wait_loaded(port)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return RunningService("redis", "127.0.0.1", port, f"redis://127.0.0.1:{port}/0", process=proc, workdir=workdir)


def _binary() -> str:
    return require_binary("redis-server")


def _wait_loaded(port: int) -> None:
    import time

    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    try:
        for _ in range(200):
            try:
                client.ping()
                return
            except redis.exceptions.BusyLoadingError:
                time.sleep(0.05)
    finally:
        client.close()


def _start_container() -> RunningService:
    from testcontainers.redis import RedisContainer  # type: ignore[import-not-found]

    container = RedisContainer("redis:7-alpine")
    container.start()
    host = container.get_container_host_ip()
    port = int(container.get_exposed_port(6379))
    return RunningService("redis", host, port, f"redis://{host}:{port}/0", container=container)


LOCAL["redis"] = start_local_redis
CONTAINER["redis"] = _start_container


@dataclass
class RedisCluster:
    """A 3-master Redis Cluster on loopback (no replicas): `url` reaches any node."""

    nodes: list[RunningService]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


def start_local_redis_cluster(masters: int = 3) -> RedisCluster:
    nodes: list[RunningService] = []
    try:
        for _ in range(masters):
            port, bus = free_port(), free_port()
            workdir = tempfile.mkdtemp(prefix="tracepipe-redis-cluster-")
            proc = subprocess.Popen(
                [
                    _binary(),
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    workdir,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-port",
                    str(bus),
                    "--protected-mode",
                    "no",
                    "--loglevel",
                    "warning",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                cwd=workdir,
            )
            nodes.append(
                RunningService("redis", "127.0.0.1", port, f"redis://127.0.0.1:{port}", process=proc, workdir=workdir)
            )
            wait_for_port("127.0.0.1", port, proc=proc)
        cli = require_binary("redis-cli")
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        _wait_cluster_ok(nodes)
    except BaseException:
        for n in nodes:
            n.stop()
        raise
    return RedisCluster(nodes)


def _wait_cluster_ok(nodes: list[RunningService], timeout: float = 30.0) -> None:
    import time

    import redis

    deadline = time.monotonic() + timeout
    for n in nodes:
        client = redis.Redis(host="127.0.0.1", port=n.port, socket_timeout=5)
        try:
            while client.cluster("info").get("cluster_state") != "ok":
                if time.monotonic() > deadline:
                    raise TimeoutError("redis cluster did not reach state ok")
                time.sleep(0.05)
        finally:
            client.close()


def start_local_sentinel(master: RunningService, service_name: str = "mymaster") -> RunningService:
    """A Redis Sentinel (redis-server --sentinel) monitoring `master`."""
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="tracepipe-sentinel-")
    conf = os.path.join(workdir, "sentinel.conf")
    with open(conf, "w", encoding="utf-8") as f:
        f.write(
            f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {workdir}\n"
            f"sentinel monitor {service_name} 127.0.0.1 {master.port} 1\n"
        )
    proc = subprocess.Popen(
        [_binary(), conf, "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=workdir
    )
    try:
        wait_for_port("127.0.0.1", port, proc=proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return RunningService("redis-sentinel", "127.0.0.1", port, f"127.0.0.1:{port}", process=proc, workdir=workdir)


def start_local_redis_tls(password: str) -> RunningService:
    """redis-server speaking TLS only (certificates from a throwaway CA made with openssl), with a password.

    `extra["ca_file"]` is the CA to trust; the URL is rediss://127.0.0.1:PORT/0 (no password in it)."""
    openssl = require_binary("openssl")
    workdir = tempfile.mkdtemp(prefix="tracepipe-redis-tls-")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=workdir, check=True, capture_output=True, timeout=60)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=tracepipe-test-ca",
    )
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    with open(os.path.join(workdir, "ext.cnf"), "w", encoding="utf-8") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            _binary(),
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--tls-cert-file",
            "server.crt",
            "--tls-key-file",
            "server.key",
            "--tls-ca-cert-file",
            "ca.crt",
            "--tls-auth-clients",
            "no",
            "--requirepass",
            password,
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=workdir,
    )
    try:
        wait_for_port("127.0.0.1", port, proc=proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return RunningService(
        "redis",
        "127.0.0.1",
        port,
        f"rediss://127.0.0.1:{port}/0",
        process=proc,
        workdir=workdir,
        extra={"ca_file": os.path.join(workdir, "ca.crt")},
    )

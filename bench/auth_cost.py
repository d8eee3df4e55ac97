"""The cost of auth (bearer-token check + tenant stamping) and TLS on the OTLP receivers.

The real OTLP/HTTP and OTLP/gRPC receivers run in this process, built from a config through
RECEIVER_FACTORIES, in front of a transport that accepts at once (so the figures are the
receiver's own cost: TLS, token check, stamping, decode). A client subprocess sends the same
request back to back over one kept-alive connection (and, for TLS, once more with a new
connection per request, to show the handshake). Every mode runs in the same run, twice in
alternating order (best of the two kept), and is reported as requests/s and as a ratio to
plain (no TLS, no auth) of the same protocol and request size. Also: the token check alone.

    python bench/auth_cost.py [--seconds 1.5]

Absolute figures depend on the machine (and on other load); compare the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.workload import make_request
from pipeline.auth.config import TokenEntry
from pipeline.auth.tokens import TokenVerifier, new_token, token_sha256
from pipeline.config import build_config
from pipeline.receivers import build_receivers
from pipeline.telemetry import Telemetry
from pipeline.transport import Offer
from tests.tls_certs import TestCA

ROOT = Path(__file__).resolve().parents[1]

CLIENT = r"""
import json, ssl, sys, time, http.client
import grpc
args = json.loads(sys.argv[1])
body = open(args["body"], "rb").read()
headers = {"Content-Type": "application/x-protobuf"}
if args["token"]:
    headers["Authorization"] = "Bearer " + args["token"]
deadline = time.perf_counter() + args["seconds"]
n = 0
start = time.perf_counter()
if args["protocol"] == "http":
    ctx = ssl.create_default_context(cafile=args["ca"]) if args["tls"] else None
    def connect():
        if ctx is None:
            return http.client.HTTPConnection("127.0.0.1", args["port"], timeout=30)
        return http.client.HTTPSConnection("127.0.0.1", args["port"], timeout=30, context=ctx)
    conn = connect()
    while time.perf_counter() < deadline:
        if args["new_conn"]:
            conn.close(); conn = connect()
        conn.request("POST", "/v1/traces", body=body, headers=headers)
        r = conn.getresponse(); r.read()
        assert r.status == 200, r.status
        n += 1
else:
    target = f"127.0.0.1:{args['port']}"
    if args["tls"]:
        creds = grpc.ssl_channel_credentials(open(args["ca"], "rb").read())
        channel = grpc.secure_channel(target, creds)
    else:
        channel = grpc.insecure_channel(target)
    call = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
    md = (("authorization", "Bearer " + args["token"]),) if args["token"] else None
    while time.perf_counter() < deadline:
        call(body, metadata=md, timeout=30)
        n += 1
print(json.dumps({"requests": n, "seconds": time.perf_counter() - start}))
"""


class AcceptAll:
    """A transport that takes every request at once: the bench measures the receiver only."""

    async def offer(self, request, spans: int, timeout: float = 0.0) -> Offer:  # type: ignore[no-untyped-def]
        return Offer.ACCEPTED

    def ready(self) -> bool:
        return True


def listener(tls: dict | None, auth: bool) -> dict:
    out: dict = {"endpoint": "127.0.0.1:0", "auth": auth}
    if tls:
        out["tls"] = tls
    return out


async def run_client(args: dict) -> tuple[float, int]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", CLIENT, json.dumps(args), cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(err.decode()[-2000:])
    res = json.loads(out.decode().strip().splitlines()[-1])
    return res["requests"] / res["seconds"], res["requests"]


async def main(seconds: float) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="tp-auth-bench-"))
    ca = TestCA(tmp / "ca")
    server = ca.issue("server")
    tls = {"cert_file": str(server.cert_file), "key_file": str(server.key_file)}
    token = new_token()
    entry = {"sha256": token_sha256(token), "tenant": "acme", "scopes": ["ingest"]}
    modes = {"plain": (None, False), "auth": (None, True), "tls": (tls, False), "tls+auth": (tls, True)}
    receivers_cfg = {f"otlp/{m}": {"grpc": listener(t, a), "http": listener(t, a)} for m, (t, a) in modes.items()}
    cfg = build_config({"auth": {"tokens": [entry]}, "receivers": receivers_cfg, "sinks": {"prometheus": {}},
                        "service": {"pipelines": {"t": {"sinks": ["prometheus"]}}}}, env={})
    receivers = build_receivers(cfg, AcceptAll(), Telemetry())
    for r in receivers:
        await r.start()
    ports = {(r.receiver_id.split("/")[1], r.kind): int(r.endpoint.rsplit(":", 1)[1]) for r in receivers}
    sizes = {"3 spans": make_request(1), "510 spans": make_request(170)}
    cases = []
    for protocol in ("http", "grpc"):
        for mode, (t, _a) in modes.items():
            cases.append((protocol, mode, False))
            if t and protocol == "http":
                cases.append((protocol, mode, True))
    results: dict[tuple, tuple[float, float]] = {}  # (requests/s, receiver CPU us per request)
    try:
        for size, req in sizes.items():
            body = tmp / f"body-{size.split()[0]}.bin"
            body.write_bytes(req.SerializeToString())
            for round_ in range(2):
                for protocol, mode, new_conn in (cases if round_ == 0 else list(reversed(cases))):
                    t, a = modes[mode]
                    args = {"protocol": protocol, "port": ports[(mode, f"otlp_{protocol}")], "body": str(body),
                            "token": token if a else None, "tls": bool(t), "ca": str(ca.cert_file),
                            "new_conn": new_conn, "seconds": seconds}
                    cpu0 = time.process_time()
                    rate, n = await run_client(args)
                    cpu_us = (time.process_time() - cpu0) / max(n, 1) * 1e6
                    key = (size, protocol, mode, new_conn)
                    best_rate, best_cpu = results.get(key, (0.0, float("inf")))
                    results[key] = (max(best_rate, rate), min(best_cpu, cpu_us))
    finally:
        for r in receivers:
            await r.stop()

    print("OTLP receivers, one client sending back to back. Receiver CPU per request (this process's CPU\n"
          "time / requests) is the robust figure on a shared machine; requests/s is wall-clock and noisy.")
    print(f"{'request':<10} {'protocol':<8} {'mode':<30} {'CPU us/req':>10} {'x plain':>8} {'req/s':>7} {'x plain':>8}")
    for size in sizes:
        for protocol in ("http", "grpc"):
            plain_rate, plain_cpu = results[(size, protocol, "plain", False)]
            for (s, p, mode, new_conn), (rate, cpu) in results.items():
                if s != size or p != protocol:
                    continue
                label = mode + (" (new connection each)" if new_conn else "")
                print(f"{size:<10} {protocol:<8} {label:<30} {cpu:>10.0f} {cpu / plain_cpu:>8.2f} {rate:>7.0f} "
                      f"{rate / plain_rate:>8.2f}")

    print("\ntoken check alone (SHA-256 + constant-time compare against every configured digest)")
    for n_tokens in (1, 100):
        entries = [TokenEntry(**{**entry, "sha256": token_sha256(new_token())}) for _ in range(n_tokens - 1)]
        verifier = TokenVerifier([*entries, TokenEntry(**entry)])
        header = f"Bearer {token}"
        loops = 20000
        per = timeit.timeit(lambda v=verifier, h=header: v.check(h, "ingest"), number=loops) / loops
        print(f"  {n_tokens:>3} tokens configured: {per * 1e6:6.1f} us per request")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=1.5, help="seconds per mode and round")
    asyncio.run(main(ap.parse_args().seconds))

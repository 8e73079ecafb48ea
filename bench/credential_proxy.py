"""What credential masking costs a command's HTTPS: the proxy's own TLS against a tunnel.

    python bench/credential_proxy.py [--requests 300] [--megabytes 64] [--rounds 3]

One managed proxy (core/network_proxy.py) serves a local HTTPS echo server
two ways: tunnelled (``credentialMasking`` off: the command's TLS goes
through untouched) and brokered (on, the host under a provider's prefix:
the proxy ends the command's TLS, rewrites each request's head and opens its
own TLS upstream, core/mitm.py). Per round: the median time of a request on
one kept-alive connection, of a request on a fresh connection (CONNECT and
handshakes included), and the throughput of one bulk download. The table
shows the median over the rounds and brokered/tunnelled.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import re
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jupyter_exec.core import mitm
from jupyter_exec.core.credential_broker import Broker, Provider
from jupyter_exec.core.network_proxy import NetworkProxy, ProxyPolicy
from tests.rpc.echo_server import echo_server

KEY = "bench_" + "k" * 32


def connection(proxy_port: int, port: int, context: ssl.SSLContext) -> http.client.HTTPSConnection:
    conn = http.client.HTTPSConnection("127.0.0.1", proxy_port, timeout=60, context=context)
    conn.set_tunnel("localhost", port)
    return conn


def get(conn: http.client.HTTPSConnection, path: str, dummy: str) -> int:
    conn.request("GET", path, headers={"Authorization": f"Bearer {dummy}"})
    answer = conn.getresponse()
    return len(answer.read())


def measure(proxy_port: int, port: int, dummy: str, context: ssl.SSLContext,
            requests: int, megabytes: int) -> tuple[float, float, float]:  # fmt: skip
    conn = connection(proxy_port, port, context)
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        get(conn, "/echo", dummy)
        times.append(time.perf_counter() - start)
    kept = statistics.median(times)
    fresh_times = []
    for _ in range(max(requests // 10, 5)):
        start = time.perf_counter()
        fresh = connection(proxy_port, port, context)
        get(fresh, "/echo", dummy)
        fresh.close()
        fresh_times.append(time.perf_counter() - start)
    start = time.perf_counter()
    got = get(conn, f"/big?n={megabytes << 20}", dummy)
    throughput = got / (time.perf_counter() - start) / (1 << 20)
    conn.close()
    return kept, statistics.median(fresh_times), throughput


async def run(args: argparse.Namespace) -> None:
    test_ca = mitm.Authority("bench test authority")
    with tempfile.TemporaryDirectory(prefix="bench-mitm-") as folder:
        (Path(folder) / "ca.pem").write_bytes(test_ca.pem)
        os.environ["SSL_CERT_FILE"] = str(Path(folder) / "ca.pem")  # the proxy's upstream trust
        rows = await _rounds(args, test_ca)
    print(f"{'':12} {'kept-alive request':>20} {'fresh connection':>18} {'bulk MiB/s':>12}")
    medians = {m: [statistics.median(r[i] for r in v) for i in range(3)] for m, v in rows.items()}
    for mode, (kept, fresh, bulk) in medians.items():
        print(f"{mode:12} {kept * 1e3:>17.2f} ms {fresh * 1e3:>15.2f} ms {bulk:>12.0f}")
    t, b = medians["tunnelled"], medians["brokered"]
    print(f"{'ratio':12} {b[0] / t[0]:>19.2f}x {b[1] / t[1]:>17.2f}x {b[2] / t[2]:>11.2f}x")


async def _rounds(
    args: argparse.Namespace, test_ca: mitm.Authority
) -> dict[str, list[tuple[float, float, float]]]:
    context = ssl.create_default_context(cafile=str(mitm.authority().bundle()))
    rows: dict[str, list[tuple[float, float, float]]] = {"tunnelled": [], "brokered": []}
    with echo_server(test_ca.context_for("localhost")) as server:
        port = int(server.url.rsplit(":", 1)[1])
        for _ in range(args.rounds):
            for mode in rows:
                proxy = NetworkProxy(ProxyPolicy(allowed=["localhost"]), None, lambda d: None)
                dummy = KEY
                if mode == "brokered":
                    provider = Provider("bench", env=("K",), url_prefixes=(f"{server.url}/",),
                                        patterns=(re.compile("bench_k{32}"),))  # fmt: skip
                    proxy.broker = Broker([provider])
                    dummy = proxy.broker.mask({"K": KEY})["K"]
                await proxy.start()
                try:
                    rows[mode].append(await asyncio.to_thread(
                        measure, proxy.port, port, dummy, context, args.requests, args.megabytes
                    ))  # fmt: skip
                finally:
                    await proxy.aclose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--megabytes", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()

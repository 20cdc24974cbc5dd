"""CPU per fetch of our HTTP client against the bare clients, on the same loopback photos.

    .venv/bin/python benchmarks/bench_fetch_client.py [--images 1000] [--rounds 3]

Clients: urllib.request (what img2dataset uses), bare http.client (one connection per request: the stdlib floor
that urllib.request and our client both stand on), a bare urllib3 PoolManager, and our ``Fetcher`` (address guard,
byte cap, wall-clock watchdog, retries, per-host throttle, X-Robots-Tag, keep-alive pool;
``allow_private_networks`` because the server is on loopback, so the guard's address check is the cheap path).
Bodies are read whole, nothing decoded.
The server is `python -m http.server`'s (bench_image_stage.served_pairs) in its own process (HTTP/1.0: one
connection per request, as for most image hosts seen once), so only the client's CPU is counted: this process's user+system time / fetches.
Rounds alternate the clients' order; the median per client is reported.
"""

from __future__ import annotations

import argparse
import http.client
import os
import resource
import statistics
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pyarrow.parquet as pq
import urllib3
from bench_image_stage import served_photos
from common import emit

from aligndata.fetch.client import FetchConfig, Fetcher


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(fetch, urls: list[str], threads: int) -> tuple[float, float]:
    """(ms CPU per fetch, fetches per second)."""
    start, cpu = time.perf_counter(), cpu_seconds()
    if threads == 1:
        sizes = [len(fetch(u)) for u in urls]
    else:
        with ThreadPoolExecutor(threads) as pool:
            sizes = [len(b) for b in pool.map(fetch, urls)]
    wall, used = time.perf_counter() - start, cpu_seconds() - cpu
    assert all(sizes)
    return 1000 * used / len(urls), len(urls) / wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    fetcher = Fetcher(FetchConfig(allow_private_networks=True, pool_maxsize=32))
    pool_manager = urllib3.PoolManager(maxsize=32)

    def with_urllib(url: str) -> bytes:
        request = urllib.request.Request(url, headers={"User-Agent": "bench"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read()

    def with_http_client(url: str) -> bytes:
        parts = urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            connection.request("GET", parts.path, headers={"User-Agent": "bench"})
            return connection.getresponse().read()
        finally:
            connection.close()

    def with_urllib3(url: str) -> bytes:
        return pool_manager.request("GET", url, timeout=10, retries=False).data

    def with_fetcher(url: str) -> bytes:
        result = fetcher.fetch(url)
        assert result.ok, result.detail
        return result.data

    clients = {"urllib.request": with_urllib, "http.client": with_http_client, "urllib3 PoolManager": with_urllib3,
               "aligndata Fetcher": with_fetcher}
    samples: dict[str, dict[int, list[tuple[float, float]]]] = {name: {1: [], 32: []} for name in clients}
    with served_photos(args.images) as (_, _, pairs):
        urls = pq.read_table(pairs).column("url").to_pylist()
        for fetch in clients.values():
            measure(fetch, urls[:50], 1)  # warm up
        for i in range(args.rounds):
            order = list(clients) if i % 2 == 0 else list(reversed(clients))
            for name in order:
                for threads in (1, 32):
                    samples[name][threads].append(measure(clients[name], urls, threads))
    fetcher.close()

    results = {}
    for name, by_threads in samples.items():
        results[name] = {
            f"{threads}_threads": {
                "ms_cpu_per_fetch": round(statistics.median(s[0] for s in runs), 3),
                "fetches_per_s": round(statistics.median(s[1] for s in runs), 1),
            }
            for threads, runs in by_threads.items()
        }
    emit("fetch_client", {"images": args.images, "rounds": args.rounds, "load_avg_1m": round(os.getloadavg()[0], 2),
                          "clients": results})


if __name__ == "__main__":
    main()

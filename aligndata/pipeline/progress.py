"""Live progress for local runs.

Beam's local runners expose no live metrics, so the DoFns count for themselves: each DoFn instance keeps a few
counters and, at most once a second, writes them to its own small JSON file in a progress directory that the
command line created. A reporter thread in the command line sums the files every few seconds and prints a line
(or a JSON object) on stderr. Files work the same for in-process and multi_processing workers; on remote runners
(Dataflow, Flink) no directory is given and nothing is written — their own UIs show progress.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
import uuid

from aligndata.progress_bar import duration_text

FLUSH_EVERY_S = 1.0


class ProgressWriter:
    """Counters of one DoFn instance, mirrored to ``DIR/<pid>-<uuid>.json``. A no-op without a directory."""

    def __init__(self, directory: str | None):
        self.directory = directory
        self.counts: dict[str, int] = {}
        self._path = os.path.join(directory, f"{os.getpid()}-{uuid.uuid4().hex}.json") if directory else None
        self._last = 0.0
        self._lock = threading.Lock()  # fetch threads report concurrently

    def add(self, **counts: int) -> None:
        if not self._path:
            return
        with self._lock:
            for key, n in counts.items():
                self.counts[key] = self.counts.get(key, 0) + n
        if time.monotonic() - self._last >= FLUSH_EVERY_S:
            self.flush()

    def flush(self) -> None:
        if not self._path:
            return
        with self._lock:
            data = json.dumps(self.counts)
            self._last = time.monotonic()
        tmp = f"{self._path}.tmp"
        try:
            with open(tmp, "w") as f:
                f.write(data)
            os.replace(tmp, self._path)  # readers never see half a file
        except OSError:
            pass  # progress is best effort; the run itself must not fail for it


def read_totals(directory: str) -> dict[str, int]:
    totals: dict[str, int] = {}
    try:
        names = os.listdir(directory)
    except OSError:
        return totals
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(directory, name)) as f:
                counts = json.load(f)
        except (OSError, ValueError):
            continue
        for key, n in counts.items():
            totals[key] = totals.get(key, 0) + n
    return totals


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


class ProgressReporter:
    """Sums the progress files every ``interval`` seconds and prints a status line (or JSON) to stderr."""

    def __init__(self, rows_total: int | None = None, interval: float = 5.0, as_json: bool = False, stream=None):
        self.directory = tempfile.mkdtemp(prefix="aligndata-progress-")
        self.rows_total = rows_total
        self.interval = interval
        self.as_json = as_json
        self.stream = stream or sys.stderr
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aligndata-progress", daemon=True)
        self._start = time.monotonic()
        self._previous: tuple[float, int] | None = None

    def snapshot(self, final: bool = False) -> dict:
        """Current totals; the fetch rate is over the last interval, or over the whole run when ``final``."""
        totals = read_totals(self.directory)
        now = time.monotonic()
        elapsed = now - self._start
        fetched = totals.get("urls_fetched", 0)
        rate = 0.0
        since, before = (self._start, 0) if final or self._previous is None else self._previous
        if now > since:
            rate = (fetched - before) / (now - since)
        self._previous = (now, fetched)
        to_fetch = totals.get("urls_to_fetch", 0)
        eta = None
        if fetched and rate > 0 and to_fetch > fetched:
            eta = (to_fetch - fetched) / rate
        elif self.rows_total and 0 < totals.get("rows_read", 0) < self.rows_total:
            eta = (self.rows_total - totals["rows_read"]) * elapsed / totals["rows_read"]
        return {
            "elapsed_s": round(elapsed, 1),
            "rows_read": totals.get("rows_read", 0),
            "rows_total": self.rows_total,
            "urls_to_fetch": to_fetch,
            "urls_fetched": fetched,
            "fetches_per_s": round(rate, 1),
            "kept": totals.get("kept", 0),
            "rejected": totals.get("rejected", 0),
            "bytes_downloaded": totals.get("bytes_downloaded", 0),
            "eta_s": None if eta is None else round(eta),
        }

    def format(self, s: dict) -> str:
        rows = f"{s['rows_read']:,}" + (f"/{s['rows_total']:,}" if s["rows_total"] else "")
        parts = [f"[{duration_text(s['elapsed_s'])}] rows {rows}"]
        if s["urls_to_fetch"]:
            parts.append(f"fetched {s['urls_fetched']:,}/{s['urls_to_fetch']:,} urls ({s['fetches_per_s']:.1f}/s)")
        parts.append(f"kept {s['kept']:,}")
        parts.append(f"rejected {s['rejected']:,}")
        if s["bytes_downloaded"]:
            parts.append(_bytes(s["bytes_downloaded"]))
        if s["eta_s"] is not None:
            parts.append(f"ETA {duration_text(s['eta_s'])}")
        return " | ".join(parts)

    def report(self, final: bool = False) -> None:
        s = self.snapshot(final)
        s["final"] = final
        print(json.dumps(s) if self.as_json else self.format(s), file=self.stream, flush=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.report()

    def __enter__(self) -> "ProgressReporter":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if exc[0] is None:
            self.report(final=True)
        for name in os.listdir(self.directory):
            try:
                os.remove(os.path.join(self.directory, name))
            except OSError:
                pass
        try:
            os.rmdir(self.directory)
        except OSError:
            pass

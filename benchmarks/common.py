"""Shared helpers for the benchmarks: where the real data is, machine details, result printing."""

from __future__ import annotations

import json
import os
import platform
import random
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def real_pairs() -> list[tuple[str, str]]:
    """All real (url, caption) pairs we ship: LAION 10k and CC3M validation."""
    if not REAL.exists():
        sys.exit(f"benchmark needs the real alt-texts in {REAL}")
    laion = pq.read_table(REAL / "captions" / "laion_alt_10k.parquet").to_pydict()
    pairs = [(u, t) for u, t in zip(laion["URL"], laion["TEXT"]) if u and t]
    cc3m = pacsv.read_csv(
        REAL / "captions" / "cc3m_validation.tsv",
        read_options=pacsv.ReadOptions(column_names=["caption", "url"]),
        parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
    ).to_pydict()
    pairs += list(zip(cc3m["url"], cc3m["caption"]))
    return pairs


def synthetic_corpus(n_rows: int, seed: int = 0) -> dict[str, list[str]]:
    """n rows drawn from the real alt-text distribution.

    Half the rows reuse a real caption verbatim (so captions repeat across images as on the web), half splice
    the first half of one real caption onto the second half of another (new texts with real tokens). URLs are
    real URLs made unique per row, except 2% that reuse an earlier row's URL (images with several alt-texts).
    """
    rng = random.Random(seed)
    pairs = real_pairs()
    urls, captions = [], []
    for i in range(n_rows):
        url, caption = pairs[rng.randrange(len(pairs))]
        if rng.random() < 0.5:
            other = pairs[rng.randrange(len(pairs))][1].split()
            words = caption.split()
            caption = " ".join(words[: len(words) // 2] + other[len(other) // 2:])
        if urls and rng.random() < 0.02:
            url = urls[rng.randrange(len(urls))]
        else:
            url = f"{url}{'&' if '?' in url else '?'}bench={i}"
        urls.append(url)
        captions.append(caption)
    return {"url": urls, "caption": captions}


def write_parquet(columns: dict, path: Path) -> str:
    pq.write_table(pa.table(columns), path)
    return str(path)


def emit(name: str, result: dict) -> None:
    """Print the result and keep it as JSON beside the benchmarks (RESULTS.md quotes these)."""
    result = {"benchmark": name, "machine": machine(), **result}
    out = REPO / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))

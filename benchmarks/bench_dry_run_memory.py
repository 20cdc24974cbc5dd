"""Peak memory of a large `curate --dry-run` (the text and frequency stage at scale).

    .venv/bin/python benchmarks/bench_dry_run_memory.py [--rows 1000000]

Writes the synthetic corpus (real alt-text distribution, see common.synthetic_corpus) to parquet, then runs the
CLI in a child process and reads its peak RSS from the kernel (ru_maxrss of the waited-for child).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import emit, synthetic_corpus, write_parquet


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aligndata-bench-") as tmp:
        tmp = Path(tmp)
        path = write_parquet(synthetic_corpus(args.rows), tmp / "pairs.parquet")
        size = os.path.getsize(path)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "aligndata.cli", "curate", "--input", path, "--output",
                        str(tmp / "out"), "--dry-run", "--quiet"], check=True)
        seconds = time.perf_counter() - start
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    emit("dry_run_memory", {"rows": args.rows, "input_bytes": size, "seconds": round(seconds, 1),
                            "rows_per_s": round(args.rows / seconds), "peak_rss_mb": round(peak_kb / 1024)})


if __name__ == "__main__":
    main()

"""Peak memory of a large `curate --dry-run` (the text and frequency stage at scale).

    .venv/bin/python benchmarks/bench_dry_run_memory.py [--rows 1000000] [--vocab-size 300000]

With a --vocab-size small enough that c* >= 2 the rare-token rule is active, the path that matters at scale.

Writes the synthetic corpus (real alt-text distribution, see common.synthetic_corpus) to parquet, then runs the
CLI in a child process and reads its peak RSS from the kernel (ru_maxrss of the waited-for child).
"""

from __future__ import annotations

import argparse
import json
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
    parser.add_argument("--vocab-size", type=int, default=100_000_000)
    parser.add_argument("--beam-args", default="", help="extra Beam options, e.g. '--direct_running_mode multi_processing'")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aligndata-bench-") as tmp:
        tmp = Path(tmp)
        path = write_parquet(synthetic_corpus(args.rows), tmp / "pairs.parquet")
        size = os.path.getsize(path)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "aligndata.cli", "curate", "--input", path, "--output",
                        str(tmp / "out"), "--dry-run", "--quiet", "--vocab-size", str(args.vocab_size), *args.beam_args.split()],
                       check=True)
        seconds = time.perf_counter() - start
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        report = json.loads((tmp / "out" / "report.json").read_text())
    name = "dry_run_memory" if args.vocab_size == 100_000_000 else f"dry_run_memory_k{args.vocab_size}_{args.rows}"
    emit(name, {"rows": args.rows, "vocab_size": args.vocab_size, "beam_args": args.beam_args,
                "allowlist_threshold": report["frequency"]["allowlist_threshold"], "input_bytes": size,
                "seconds": round(seconds, 1), "rows_per_s": round(args.rows / seconds),
                "peak_rss_mb": round(peak_kb / 1024), "peak_rss_bytes_per_row": round(peak_kb * 1024 / args.rows)})


if __name__ == "__main__":
    main()

"""Text stage throughput: `curate --dry-run` on Beam against a plain-Python floor doing the same work.

    .venv/bin/python benchmarks/bench_text_stage.py [--rows 200000]

Both read the same parquet file and apply the same rules (validation, normalization, word count, boilerplate,
n-gram counting and the allowlist threshold, texts per image, images per text, duplicates). The floor is
single-process and in memory (aligndata/pipeline/reference.py); the pipeline additionally writes the candidates and
rejected ledgers and runs through Beam's FnApiRunner.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import emit, synthetic_corpus, write_parquet
from aligndata.pipeline.reference import plain_text_stage

from aligndata.pipeline.config import CurateConfig
from aligndata.pipeline.run import run_curate
from aligndata.io.inputs import InputSpec
from aligndata.pipeline.sources import iter_rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--vocab-size", type=int, default=100_000_000)
    parser.add_argument("--workers", type=int, default=2, help="also run multi_processing with this many workers")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="aligndata-bench-") as tmp:
        tmp = Path(tmp)
        path = write_parquet(synthetic_corpus(args.rows), tmp / "pairs.parquet")

        start = time.perf_counter()
        spec = InputSpec(path=path, index=0, fmt="parquet", url_col="url", caption_col="caption")
        verdicts, info = plain_text_stage(iter_rows(spec), vocab_size=args.vocab_size)
        floor_s = time.perf_counter() - start
        floor_kept = sum(1 for v in verdicts.values() if v is None)

        runs = {}
        variants = [("fnapi", [])]
        if args.workers > 1:
            variants.append((f"multi_processing_{args.workers}",
                             ["--direct_running_mode", "multi_processing", "--direct_num_workers", str(args.workers)]))
        for name, beam_args in variants:
            cfg = CurateConfig(inputs=(path,), output=str(tmp / f"out-{name}"), dry_run=True,
                               vocab_size=args.vocab_size)
            start = time.perf_counter()
            report = run_curate(cfg, beam_args)
            seconds = time.perf_counter() - start
            if report["kept"] != floor_kept:
                raise SystemExit(f"{name}: pipeline kept {report['kept']} rows, the floor {floor_kept}")
            runs[name] = {"seconds": round(seconds, 2), "rows_per_s": round(args.rows / seconds),
                          "slowdown_vs_floor": round(seconds / floor_s, 2)}

    # The default K and a K small enough for the rare-token rule to run are kept apart (issue 14 item 5).
    name = "text_stage" if args.vocab_size == 100_000_000 else f"text_stage_k{args.vocab_size}"
    emit(name, {
        "rows": args.rows,
        "vocab_size": args.vocab_size,
        "kept": floor_kept,
        "allowlist_threshold": info["allowlist_threshold"],
        "distinct_ngrams": info["distinct_ngrams"],
        "floor": {"seconds": round(floor_s, 2), "rows_per_s": round(args.rows / floor_s)},
        "pipeline": runs,
    })


if __name__ == "__main__":
    main()

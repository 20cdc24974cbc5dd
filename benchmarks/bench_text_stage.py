"""Text stage throughput: `curate --dry-run` on Beam against a lean plain-Python floor doing the same rules.

    .venv/bin/python benchmarks/bench_text_stage.py [--rows 200000] [--vocab-size 100000]

All read the same parquet file and apply the same rules (validation, normalization, word count, boilerplate,
n-gram counting and the allowlist threshold, rare tokens, texts per image, images per text, duplicates). The
floor is aligndata/pipeline/lean_floor.py: the leanest single-process, in-memory loop giving the same verdicts
(no sample keys, no hashes, no candidate dicts; issue 14 item 5). The reference loop
(aligndata/pipeline/reference.py, the tests' oracle, which builds each candidate as the pipeline does) is timed
in the same run as a second line; the pipeline's slowdown is reported against the floor, and against the
reference too. The pipeline additionally writes the candidates and rejected ledgers and runs through Beam.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import emit, synthetic_corpus, write_parquet
from aligndata.pipeline.lean_floor import lean_text_stage
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

        spec = InputSpec(path=path, index=0, fmt="parquet", url_col="url", caption_col="caption")
        sum(1 for _ in iter_rows(spec))  # the reader's first-use costs, so they fall on neither loop
        timed = {}
        for name, stage in (("floor", lean_text_stage), ("reference", plain_text_stage)):
            start = time.perf_counter()
            verdicts, info = stage(iter_rows(spec), vocab_size=args.vocab_size)
            timed[name] = (time.perf_counter() - start, verdicts, info)
        floor_s, verdicts, info = timed["floor"]
        reference_s, reference_verdicts, reference_info = timed["reference"]
        if verdicts != reference_verdicts or info != reference_info:
            raise SystemExit("the lean floor and the reference loop disagree")
        floor_kept = sum(1 for v in verdicts.values() if v is None)
        del timed, verdicts, reference_verdicts  # the pipeline runs in this process: leave it a clean heap

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
                raise SystemExit(f"{name}: pipeline kept {report['kept']} rows, the floor and reference {floor_kept}")
            runs[name] = {"seconds": round(seconds, 2), "rows_per_s": round(args.rows / seconds),
                          "slowdown_vs_floor": round(seconds / floor_s, 2),
                          "slowdown_vs_reference": round(seconds / reference_s, 2)}

    # The default K and a K small enough for the rare-token rule to run are kept apart (issue 14 item 5).
    name = "text_stage" if args.vocab_size == 100_000_000 else f"text_stage_k{args.vocab_size}"
    emit(name, {
        "rows": args.rows,
        "vocab_size": args.vocab_size,
        "kept": floor_kept,
        "allowlist_threshold": info["allowlist_threshold"],
        "distinct_ngrams": info["distinct_ngrams"],
        "floor": {"seconds": round(floor_s, 2), "rows_per_s": round(args.rows / floor_s)},
        "reference": {"seconds": round(reference_s, 2), "rows_per_s": round(args.rows / reference_s),
                      "slowdown_vs_floor": round(reference_s / floor_s, 2)},
        "pipeline": runs,
    })


if __name__ == "__main__":
    main()

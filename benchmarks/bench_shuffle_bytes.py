"""Shuffle bytes per input row of `curate --dry-run`, measured on the encoded elements each grouping receives.

    .venv/bin/python benchmarks/bench_shuffle_bytes.py [--rows 200000] [--vocab-size 100000]

Runs the pipeline in this process on FnApiRunner with its grouping buffer instrumented: every GroupByKey (and
every combiner's shuffle) is fed encoded bytes through ``GroupingBuffer.append``, which are what a distributed
runner writes to its shuffle (Dataflow and Flink add their own framing). Reports the bytes each grouping
received, per input row, and their total. Combiners are pre-combined before the shuffle, as on every runner.
"""

from __future__ import annotations

import argparse
import collections
import re
import tempfile
import time
from pathlib import Path

from apache_beam.runners.portability.fn_api_runner import execution, translations

from common import emit, synthetic_corpus, write_parquet
from aligndata.pipeline.config import CurateConfig
from aligndata.pipeline.run import run_curate

RECEIVED: collections.Counter = collections.Counter()
ELEMENTS: collections.Counter = collections.Counter()


def _instrument() -> None:
    get_buffer = execution.BundleContextManager.get_buffer
    append = execution.GroupingBuffer.append

    def named_get_buffer(self, buffer_id, transform_id):
        buffer = get_buffer(self, buffer_id, transform_id)
        kind, name = translations.split_buffer_id(buffer_id)
        if kind == "group":
            buffer.aligndata_name = re.sub(r"^ref_AppliedPTransform_|_\d+$", "", name.split("/")[0])
        return buffer

    def counted_append(self, elements_data):
        name = getattr(self, "aligndata_name", "?")
        RECEIVED[name] += len(elements_data)
        before = sum(len(v) for v in self._table.values())
        append(self, elements_data)
        ELEMENTS[name] += sum(len(v) for v in self._table.values()) - before

    execution.BundleContextManager.get_buffer = named_get_buffer
    execution.GroupingBuffer.append = counted_append


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--vocab-size", type=int, default=100_000)
    args = parser.parse_args()
    _instrument()
    with tempfile.TemporaryDirectory(prefix="aligndata-bench-") as tmp:
        path = write_parquet(synthetic_corpus(args.rows), Path(tmp) / "pairs.parquet")
        cfg = CurateConfig(inputs=(path,), output=str(Path(tmp) / "out"), dry_run=True, vocab_size=args.vocab_size)
        start = time.perf_counter()
        report = run_curate(cfg, ["--runner", "FnApiRunner"])
        seconds = time.perf_counter() - start
    per_row = {name: round(n / args.rows, 1) for name, n in RECEIVED.most_common()}
    for name, n in RECEIVED.most_common():
        print(f"{name:40s} {n / 2**20:9.1f} MB {n / args.rows:8.1f} B/row {ELEMENTS[name]:>10,} elements")
    total = sum(RECEIVED.values())
    print(f"{'total':40s} {total / 2**20:9.1f} MB {total / args.rows:8.1f} B/row")
    emit(f"shuffle_bytes_k{args.vocab_size}", {
        "rows": args.rows, "vocab_size": args.vocab_size,
        "allowlist_threshold": report["frequency"]["allowlist_threshold"], "seconds": round(seconds, 1),
        "shuffle_bytes_per_row": round(total / args.rows, 1), "by_grouping_bytes_per_row": per_row,
        "elements_by_grouping": dict(ELEMENTS.most_common()),
    })


if __name__ == "__main__":
    main()

"""What the text_language rule costs: per row, and in the whole text stage (`curate --dry-run`), on against off.

    .venv/bin/python benchmarks/bench_language_cost.py [--rows 50000] [--languages en] [--repeats 2]

The corpus is bench_text_stage.py's (rows drawn from the real LAION + CC3M alt-texts). Three measurements, each
with the rule off and on, alternating (off, on, off, on, ...) so a busy phase of the shared machine falls on
both; the best of --repeats is kept, in CPU time (the process's, Beam's in-process workers included: other jobs
on a shared machine inflate wall time far more) and in wall time:

* the rule alone: ``language.detect`` on every caption that reaches it (those passing the word-count and
  boilerplate rules), in CPU time, per row;
* the lean plain-Python floor (pipeline/lean_floor.py) with and without the rule;
* ``curate --dry-run`` on FnApiRunner with and without ``--languages`` (which also tags every candidate, so its
  record carries two more fields through the shuffle).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import emit, synthetic_corpus, write_parquet
from aligndata.filters import language
from aligndata.filters.registry import row_rules, rule_options
from aligndata.filters.text import normalize_text, tokenize
from aligndata.io.inputs import InputSpec
from aligndata.pipeline.config import CurateConfig
from aligndata.pipeline.lean_floor import lean_text_stage
from aligndata.pipeline.run import run_curate
from aligndata.pipeline.sources import iter_rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--languages", type=language.language_codes, default=("en",))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    on = {"languages": args.languages}

    with tempfile.TemporaryDirectory(prefix="aligndata-bench-") as tmp:
        tmp = Path(tmp)
        path = write_parquet(synthetic_corpus(args.rows), tmp / "pairs.parquet")
        spec = InputSpec(path=path, index=0, fmt="parquet", url_col="url", caption_col="caption")
        raws = list(iter_rows(spec))

        # the captions that reach the rule: valid, normalized, through the earlier (cheap) row rules
        cheap = row_rules(rule_options())
        reaching = []
        for raw in raws:
            caption = normalize_text(raw["text"]) if raw["text"] else ""
            words = tokenize(caption)
            if caption and not any(decide(caption, words) for _, decide in cheap):
                reaching.append(caption)
        language.detect("warm up the model")
        detect_s = float("inf")
        for _ in range(args.repeats):
            language._last = (None, ("", 0.0))  # noqa: SLF001 (no answer carried over from the last pass)
            start = time.process_time()
            for caption in reaching:
                language.detect(caption)
            detect_s = min(detect_s, time.process_time() - start)

        timings = {(stage, clock, variant): float("inf") for stage in ("floor", "pipeline")
                   for clock in ("cpu", "wall") for variant in ("off", "on")}

        def timed(stage, variant, work):
            wall, cpu = time.perf_counter(), time.process_time()
            out = work()
            for clock, took in (("wall", time.perf_counter() - wall), ("cpu", time.process_time() - cpu)):
                timings[stage, clock, variant] = min(timings[stage, clock, variant], took)
            return out

        kept = {}
        for i in range(args.repeats):
            for variant, options in (("off", {}), ("on", on)):
                verdicts, _ = timed("floor", variant, lambda: lean_text_stage(iter(raws), **options))
                kept[variant] = sum(v is None for v in verdicts.values())
                cfg = CurateConfig(inputs=(path,), output=str(tmp / f"out-{variant}-{i}"), dry_run=True, **options)
                report = timed("pipeline", variant, lambda: run_curate(cfg, []))
                if report["kept"] != kept[variant]:
                    raise SystemExit(f"{variant}: pipeline kept {report['kept']}, the floor {kept[variant]}")

    result = {
        "rows": args.rows,
        "languages": list(args.languages),
        "rows_reaching_the_rule": len(reaching),
        "kept": kept,
        "detect_us_per_caption_cpu": round(detect_s / len(reaching) * 1e6, 1),
    }
    for stage in ("floor", "pipeline"):
        for clock in ("cpu", "wall"):
            off, on_ = timings[stage, clock, "off"], timings[stage, clock, "on"]
            result[f"{stage}_{clock}_seconds"] = {"off": round(off, 2), "on": round(on_, 2)}
            result[f"{stage}_{clock}_us_per_row_added"] = round((on_ - off) / args.rows * 1e6, 1)
            result[f"{stage}_{clock}_on_over_off"] = round(on_ / off, 3)
    emit(f"language_cost_{'_'.join(args.languages)}", result)


if __name__ == "__main__":
    main()

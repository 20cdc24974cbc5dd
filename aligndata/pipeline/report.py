"""report.json (the funnel) and sizes.json: written once, after every shard and the ledger exist."""

from __future__ import annotations

import logging

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from aligndata.filters import registry
from aligndata.io.atomic import write_json_atomic
from aligndata.shards.writer import compact_shards, write_sizes

class SumCounts(beam.CombineFn):
    """Sum dicts of counters; the global totals stay as small as the set of counter names."""

    def create_accumulator(self):
        return {}

    def add_input(self, acc, element):
        for key, n in element.items():
            acc[key] = acc.get(key, 0) + n
        return acc

    def merge_accumulators(self, accs):
        out = {}
        for acc in accs:
            self.add_input(out, acc)
        return out

    def extract_output(self, acc):
        return dict(sorted(acc.items()))


def funnel(input_rows: int, by_reason: dict) -> list[dict]:
    remaining = input_rows
    out = [{"stage": "input_rows", "rows": input_rows}]
    for stage, stage_reasons in registry.FUNNEL:  # each stage keeps the rows that pass all reasons so far
        dropped = sum(by_reason.get(r, 0) for r in stage_reasons)
        remaining -= dropped
        out.append({"stage": stage, "rows": remaining, "dropped": dropped})
    return out


def build_report(cfg, rows_read: int, reason_counts: dict, freq: dict, kept: int, extra: dict) -> dict:
    by_reason = {r: int(reason_counts.get(r, 0)) for r in registry.REASONS}
    unknown = set(reason_counts) - set(by_reason)
    if unknown:
        raise ValueError(f"unknown reason codes in the ledger: {sorted(unknown)}")
    rejected = sum(by_reason.values())
    pct = (lambda n: round(100.0 * n / rows_read, 3)) if rows_read else (lambda n: 0.0)
    return {
        "dry_run": cfg.dry_run,
        "input_rows": rows_read,
        "kept": kept,
        "rejected": rejected,
        "accounting_ok": rows_read == kept + rejected,
        "rejected_by_reason": by_reason,
        "rejected_pct_by_reason": {r: pct(n) for r, n in by_reason.items()},
        "funnel": funnel(rows_read, by_reason),
        "frequency": freq,
        **extra,
    }


COUNTERS = ("count", "successes", "failed_to_download", "failed_to_resize")


def _dropped(stats: dict) -> dict:
    """img2dataset's counters of one shard (under the name it had before the renumbering)."""
    return {"assigned_shard": stats["shard"], **{name: stats[name] for name in COUNTERS},
            "status_dict": stats["status_dict"]}


def _summed(stats: list[dict]) -> dict:
    return {name: sum(s[name] for s in stats) for name in COUNTERS}


def write_final(_, cfg, rows_read, reason_counts, freq, written, extraction=None, shard_stats=None, fetch_stats=None):
    """Runs once at the very end (its side inputs depend on every writer). ``written``: rows per ledger."""
    extra = {"rejected_written": written.get("rejected", 0)}
    if extraction is not None:
        extra["extraction"] = extraction
    if cfg.dry_run:
        kept = extra["candidates"] = written.get("candidates", 0)
    else:
        dropped = [_dropped(s) for s in sorted(shard_stats, key=lambda s: (len(s["shard"]), s["shard"])) if not s["successes"]]
        totals = _summed(shard_stats)
        shard_stats = compact_shards(cfg.output, shard_stats, cfg.shard_digits)
        kept = sum(s["successes"] for s in shard_stats)
        write_sizes(cfg.output, {f"{s['shard']}.tar": s["successes"] for s in shard_stats})
        extra["shards"] = len(shard_stats)
        # img2dataset's counters over every shard, and those of shards dropped because nothing in them succeeded
        # (their _stats.json files are gone, their rows are in the rejected ledger)
        extra["shard_rows"] = totals
        extra["shards_dropped_empty"] = dropped
        extra["samples_per_shard_target"] = cfg.samples_per_shard
        extra["fetch"] = fetch_stats
        extra["bytes_written"] = sum(s.get("bytes", 0) for s in shard_stats)
    result = build_report(cfg, rows_read, reason_counts, freq, kept, extra)
    if not result["accounting_ok"]:
        logging.error("accounting mismatch: %d rows in, %d kept + %d rejected", rows_read, kept, result["rejected"])
    write_json_atomic(FileSystems.join(cfg.output, "report.json"), result)
    return result


"""Running ``aligndata dedup``: SHARDS -> checked inputs and output directory -> the Beam job -> summary.json."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time

from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

from aligndata import __version__
from aligndata.filters import corpus_dedup as cd
from aligndata.io.atomic import write_json_atomic
from aligndata.io.inputs import InputError
from aligndata.io.storage import storage_for
from aligndata.pipeline.dedup_job import DedupConfig, ReadShard, build_dedup, read_parquet_columns
from aligndata.pipeline.progress import ProgressReporter, read_totals
from aligndata.pipeline.run import LOCAL_RUNNERS, new_pipeline, pipeline_options, worker_input_errors
from aligndata.progress_bar import duration_text
from aligndata.shards import duplicates as dup
from aligndata.shards.spec import ShardSetError, resolve
from aligndata.shards.writer import OutputDirNotEmpty

_log = logging.getLogger(__name__)
# What dedup writes in its output directory (and --overwrite removes): parts, the summary, their temp files.
_OWNED_RE = re.compile(r"^(?:part-\d{5,}-of-\d{5,}\.parquet|summary\.json|\..+\.tmp-[0-9a-f]{32})$")


def check_config(cfg: DedupConfig) -> None:
    if not 0 <= cfg.hamming <= cd.MAX_HAMMING:
        raise InputError(f"--hamming must be within 0..{cd.MAX_HAMMING}, got {cfg.hamming}")
    if cfg.max_band_size < 2:
        raise InputError(f"--max-band-size must be >= 2, got {cfg.max_band_size}")
    if cfg.max_rounds < 1:
        raise InputError(f"--max-rounds must be >= 1, got {cfg.max_rounds}")


def shard_parquets(spec: str) -> tuple[list[str], str]:
    """(each shard's parquet, in SHARDS order; the default output directory, or "" when the shards lie in
    several directories)."""
    try:
        shards = resolve(spec)
    except ShardSetError as err:
        raise InputError(str(err)) from None
    parents = {shards.parent(p) for p in shards.paths}
    default = shards.join(parents.pop(), dup.DUPLICATES) if len(parents) == 1 else ""
    return [shards.companion(p, ".parquet") for p in shards.paths], default


def prepare_output(output: str, overwrite: bool) -> None:
    """Refuse an output directory holding files unless ``overwrite``; then remove only what dedup wrote."""
    storage = storage_for(output)
    entries = [p for p in storage.list_files(output) if storage.parent(p) == storage.parent(storage.join(output, "x"))]
    ours = [p for p in entries if _OWNED_RE.match(storage.basename(p))]
    if entries and not overwrite:
        raise OutputDirNotEmpty(f"output directory {output} is not empty ({len(entries)} files); pass --overwrite "
                                "to replace the duplicates written there")
    if len(ours) < len(entries):
        others = sorted(storage.basename(p) for p in entries if p not in ours)
        raise OutputDirNotEmpty(f"output directory {output} holds files dedup did not write ({', '.join(others[:3])}"
                                f"{', ...' if len(others) > 3 else ''}); choose another --output")
    for path in ours:
        storage.delete(path)
    storage.makedirs(output)


class DedupProgress(ProgressReporter):
    """Live progress of a local dedup run: rows read, band buckets verified, rows written."""

    def snapshot(self, final: bool = False) -> dict:
        totals = read_totals(self.directory)
        elapsed = time.monotonic() - self._start
        rows = totals.get("rows_read", 0)
        eta = None
        if self.rows_total and 0 < rows < self.rows_total:
            eta = round((self.rows_total - rows) * elapsed / rows)
        return {"elapsed_s": round(elapsed, 1), "rows_read": rows, "rows_total": self.rows_total,
                "buckets_verified": totals.get("buckets", 0), "rows_written": totals.get("listed", 0),
                "read_eta_s": eta}

    def format(self, s: dict) -> str:
        rows = f"{s['rows_read']:,}" + (f"/{s['rows_total']:,}" if s["rows_total"] else "")
        parts = [f"[{duration_text(s['elapsed_s'])}] rows read {rows}"]
        if s["buckets_verified"]:
            parts.append(f"band buckets verified {s['buckets_verified']:,}")
        if s["rows_written"]:
            parts.append(f"duplicates written {s['rows_written']:,}")
        if s["read_eta_s"] is not None:
            parts.append(f"reading ETA {duration_text(s['read_eta_s'])}")
        return " | ".join(parts)


def _known_rows(spec: str) -> int | None:
    try:
        return resolve(spec).total_samples()
    except (ShardSetError, OSError, ValueError):
        return None


def run_dedup(cfg: DedupConfig, beam_args: list[str] | None = None, progress: str = "off",
              progress_interval: float = 5.0) -> dict:
    """Run the whole dedup job; returns summary.json's content (also written beside the parts)."""
    check_config(cfg)
    parquets, default_output = shard_parquets(cfg.shards)
    output = cfg.output or default_output
    if not output:
        raise InputError(f"the shards of {cfg.shards} lie in several directories; pass --output DIR")
    # The first shard's columns are checked here, so a wrong SHARDS fails at once, before any worker starts.
    read_parquet_columns(parquets[0], [c for c in ReadShard.COLUMNS if cfg.near or c != "phash"])
    prepare_output(output, cfg.overwrite)
    options = pipeline_options(beam_args or [])
    runner = options.view_as(StandardOptions).runner
    _log.info("dedup: %d shard(s) -> %s (runner %s)", len(parquets), output, runner)
    started = time.perf_counter()
    if progress != "off" and runner.split(".")[-1] in LOCAL_RUNNERS:
        with DedupProgress(_known_rows(cfg.shards), progress_interval, as_json=progress == "json") as reporter:
            with worker_input_errors(), new_pipeline(options) as p:
                build_dedup(p, dataclasses.replace(cfg, progress_dir=reporter.directory), parquets, output)
    else:
        with worker_input_errors(), new_pipeline(options) as p:
            build_dedup(p, cfg, parquets, output)
    storage = storage_for(output)
    summary_path = storage.join(output, dup.SUMMARY)
    with storage.open_read(summary_path) as f:
        summary = json.load(f)
    summary.update(seconds=round(time.perf_counter() - started, 2), runner=runner,
                   direct_running_mode=options.view_as(DirectOptions).direct_running_mode,
                   shards_spec=cfg.shards, output=output, aligndata=__version__)
    write_json_atomic(summary_path, summary)
    return summary

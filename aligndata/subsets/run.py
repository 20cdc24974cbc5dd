"""The whole `aligndata subset` run: read-only passes first, then the output.

1. With scores asked for, one pass checks every shard's scores (all samples scored, one model) and, for
   ``--top-fraction``, counts the first digit of the rank key; further radix-select passes find the cutoff.
2. A pass over every shard's parquet gives each shard's kept rows and their uids (``select.choose``).
3. Only then is the output directory prepared, so a bad input never costs the files already there. The kept
   samples, in input order, are cut into output shards of ``samples_per_shard`` (the last one smaller), each
   written by one worker (``repack.write_output``); then sizes.json, uids.npy and, last, subset.json.

Shards are spread over ``processes`` worker processes (spawned, so no thread state is forked); results come back in
input order and every output file's bytes depend only on the plan, so any number of processes writes the same
bytes. The main process holds per kept sample its parquet row (8 bytes) and uid (16 bytes) until uids.npy is
written; nothing else it holds grows with the corpus.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction

import numpy as np

from aligndata import __version__
from aligndata.io.atomic import write_bytes_atomic, write_json_atomic
from aligndata.progress_bar import progress_bar
from aligndata.shards.writer import check_output_dir, prepare_output_dir, write_sizes
from aligndata.subsets import SubsetError
from aligndata.subsets import scores as scoring
from aligndata.subsets.repack import OutputJob, write_output
from aligndata.subsets.select import FILTERS, Context, Request, ShardChoice, choose, rank_histogram
from aligndata.subsets.uids import npy_bytes, sorted_unique

SUBSET_JSON = "subset.json"
UIDS_NPY = "uids.npy"
UID_FORMAT = "DataComp subset: numpy.dtype('u8,u8') (uid hi, lo), little-endian, sorted, each uid once"


def run_subset(request: Request, processes: int = 1, overwrite: bool = False, quiet: bool = True) -> dict:
    """Run the request; return what subset.json holds."""
    context = Context(request)  # compiles --where and reads the uid lists: their errors come before any work
    _check_output(context)
    check_output_dir(request.output, overwrite)
    with _Workers(request, context, processes) as workers:
        model, unscored, top = _score_passes(workers, context, quiet)
        choices = list(workers.run(choose, [(path, top.get("cutoff")) for path in request.paths],
                                   _bar(quiet, len(request.paths), "subset: select", "shard")))
        total = sum(choice.total for choice in choices)
        jobs = plan(choices, request.samples_per_shard)
        prepare_output_dir(request.output, overwrite, request.shard_digits)
        stats = list(workers.run(write_output, [(job,) for job in jobs],
                                 _bar(quiet, len(jobs), "subset: write", "shard")))
    write_sizes(request.output, {f"{s['shard']}.tar": s["successes"] for s in stats})
    kept_hi = np.concatenate([c.hi for c in choices]) if choices else np.zeros(0, np.uint64)
    kept_lo = np.concatenate([c.lo for c in choices]) if choices else np.zeros(0, np.uint64)
    unique = len(sorted_unique(kept_hi, kept_lo)[0])
    storage = context.shards.storage(request.output)
    write_bytes_atomic(storage.join(request.output, UIDS_NPY), npy_bytes(kept_hi, kept_lo))
    summary = _summary(context, choices, stats, total, model, unscored, top, unique)
    write_json_atomic(storage.join(request.output, SUBSET_JSON), summary)
    return summary


def plan(choices: list[ShardChoice], per_shard: int) -> list[OutputJob]:
    """Cut the kept rows, in input order, into jobs of ``per_shard`` samples (the last one smaller)."""
    jobs: list[OutputJob] = []
    segments: list[tuple[str, np.ndarray]] = []
    room = per_shard
    for choice in choices:
        rows = choice.rows
        while len(rows):
            take, rows = rows[:room], rows[room:]
            segments.append((choice.path, take))
            room -= len(take)
            if room == 0:
                jobs.append(OutputJob(len(jobs), tuple(segments)))
                segments, room = [], per_shard
    if segments:
        jobs.append(OutputJob(len(jobs), tuple(segments)))
    return jobs


# ------------------------------------------------------------------------------------------------ scores


def _score_passes(workers: _Workers, context: Context, quiet: bool) -> tuple[str | None, int, dict]:
    """Check every shard's scores; with --top-fraction, find the cutoff among the scored samples. Returns (model,
    unscored samples, top-fraction facts)."""
    request = context.request
    if not request.needs_scores:
        return None, 0, {}
    passes = 0

    def count_next(prefix: tuple[int, ...]) -> np.ndarray:
        nonlocal passes
        passes += 1
        counts = np.zeros(scoring.BINS, np.int64)
        for _, _, _, histogram in workers.run(rank_histogram, [(path, prefix) for path in request.paths],
                                           _bar(quiet, len(request.paths), f"subset: rank pass {passes}",
                                                "shard")):
            counts += histogram
        return counts

    # The first pass checks the scores (run in every case) and is the select's first histogram.
    models: set[str] = set()
    total = unscored = 0
    first = np.zeros(scoring.BINS, np.int64)
    for samples, shard_unscored, shard_models, histogram in workers.run(
            rank_histogram, [(p, ()) for p in request.paths], _bar(quiet, len(request.paths), "subset: scores",
                                                                    "shard")):
        total += samples
        unscored += shard_unscored
        models |= shard_models
        scoring.check_one_model(models)  # at the first shard that disagrees
        first += histogram
    passes = 1
    model = scoring.check_one_model(models)
    if request.top_fraction is None:
        return model, unscored, {}
    fraction = Fraction(request.top_fraction)
    k = scoring.top_count(fraction, total)
    top: dict = {"fraction": request.top_fraction, "k": k, "of": total}
    if k == 0:
        top["cutoff"] = "none"
    elif k == total:
        top["cutoff"] = "all"
    else:
        digits = scoring.radix_select(k, lambda prefix: first if not prefix else count_next(prefix))
        top["cutoff"] = scoring.cutoff_parts(digits)
        top["lowest_score_kept"] = scoring.score_at(top["cutoff"][0])
    top["passes"] = passes
    return model, unscored, top


# ------------------------------------------------------------------------------------------------ output


def _check_output(context: Context) -> None:
    """The output must not be where the source shards are: --overwrite would delete them."""
    output = _normal(context.request.output)
    for path in context.request.paths:
        if _normal(context.shards.parent(path)) == output:
            raise SubsetError(f"--output {context.request.output} holds the source shards "
                              f"({context.shards.name(path)}); write the subset to another directory")


def _normal(path: str) -> str:
    return os.path.realpath(path) if "://" not in path else path.rstrip("/")


def _summary(context: Context, choices: list[ShardChoice], stats: list[dict], total: int, model: str | None,
             unscored: int, top: dict, unique: int) -> dict:
    request = context.request
    kept = sum(len(c.rows) for c in choices)
    filters = []
    for name in FILTERS:
        if name in _asked(request):
            filters.append({"filter": name, "passed": sum(c.passed.get(name, 0) for c in choices),
                            "left": sum(c.funnel.get(name, 0) for c in choices)})
    summary: dict = {
        "aligndata_version": __version__,
        "asked": request.asked(),
        "input": {"shards": len(request.paths), "samples": total},
        "filters": filters,
        "kept": kept,
        "output": {"shards": len(stats), "samples_per_shard": request.samples_per_shard,
                   "shard_digits": request.shard_digits},
        "uids": {"file": UIDS_NPY, "format": UID_FORMAT, "count": unique, "repeated": kept - unique},
    }
    if model is not None or request.needs_scores:
        summary["scores"] = {"model": model, "unscored": unscored}  # null scores: never kept
    if top:
        summary["top_fraction"] = {key: value for key, value in top.items() if key != "cutoff"}
    if context.uid_list is not None:
        summary["uid_list"] = {"file": request.uids, "uids": len(context.uid_list)}
    if context.duplicates is not None:
        summary["duplicates"] = {"listing": request.duplicates, "rows": context.duplicate_rows,
                                 "uids_marked_dropped": len(context.duplicates)}
    return summary


def _asked(request: Request) -> set[str]:
    return {name for name, value in (("uids", request.uids), ("drop_duplicates", request.duplicates),
                                     ("where", request.where), ("min_score", request.min_score),
                                     ("top_fraction", request.top_fraction)) if value is not None}


# ------------------------------------------------------------------------------------------------ workers


def _bar(quiet: bool, total: int, desc: str, unit: str):
    return None if quiet else progress_bar(total, desc=desc, unit=unit, stream=sys.stderr)


_WORKER_CONTEXT: Context | None = None


def _start_worker(request: Request) -> None:
    global _WORKER_CONTEXT
    _WORKER_CONTEXT = Context(request)


def _in_worker(call: tuple[Callable, tuple]):
    function, args = call
    return function(_WORKER_CONTEXT, *args)


class _Workers:
    """``run(function, items)``: function(context, *item) for each item, results in item order; in this process
    when ``processes`` is 1, else in a pool of spawned processes that each build their own Context once."""

    def __init__(self, request: Request, context: Context, processes: int):
        self.context = context
        self.pool = None
        if processes > 1:  # workers start on demand, so a pass with fewer items starts fewer
            self.pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_start_worker, initargs=(request,))

    def run(self, function: Callable, items: list[tuple], bar=None) -> Iterator:
        if self.pool is None:
            results: Iterable = (function(self.context, *item) for item in items)
        else:
            results = self.pool.map(_in_worker, [(function, item) for item in items])
        for result in results:
            if bar is not None:
                bar.update(1)
            yield result
        if bar is not None:  # not on an error: its one line is all the user should see
            bar.close()

    def __enter__(self) -> _Workers:
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

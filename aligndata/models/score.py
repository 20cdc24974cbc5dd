"""``aligndata score``: every sample's image-text cosine similarity under one model, a parquet file per shard.

For each shard ``NNNNN.tar`` the output directory gets ``NNNNN_scores.parquet``: one row per sample, in the shard's
order, with ``uid`` (the .json's uid, else the sample key), ``key``, ``score`` (float32 cosine of the L2-normalised
image and caption embeddings), ``reason`` and ``model`` (the model id, see ``encoders``). A sample that cannot be
scored keeps its row, with a null score and a reason: ``missing_image``, ``missing_caption`` (no .txt, not UTF-8, or
empty) or ``bad_image`` (does not decode). Problems with the tar itself (truncated, unsafe members, a count that
disagrees with sizes.json) are listed in the file's metadata and in the summary, ``scores.json``.

Each file is written whole under a temporary name and renamed, so a file that exists is complete: a second run skips
shards whose file was made by the same model id at the same precision from the same tar (its size), and recomputes
the rest. A file made by another model, precision or tar is an error unless ``overwrite``: scores are never mixed.

Decoding and preprocessing run in data-loader workers; a worker reads each tar and prepares only its own batches
(batch i of the whole run goes to worker i mod W), so the main process receives batches in order, runs the model
(bf16 autocast on a GPU by default) and writes a shard's file when its last batch arrives.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from aligndata.io.atomic import write_bytes_atomic, write_json_atomic
from aligndata.io.storage import has_glob, scheme_of, storage_for, strip_file_scheme
from aligndata.models import transforms
from aligndata.models.encoders import Encoder, ModelError, Preprocess, load_encoder
from aligndata.progress_bar import progress_bar
from aligndata.shards.reader import Sample, iter_shard
from aligndata.shards.spec import ShardSet, ShardSetError, resolve
from aligndata.shards.writer import parquet_bytes

log = logging.getLogger(__name__)

SCORES_SUFFIX = "_scores.parquet"
SUMMARY_NAME = "scores.json"
META_KEY = b"aligndata.scores"
REASONS = ("missing_image", "missing_caption", "bad_image")
PRECISIONS = ("fp32", "bf16")


class ScoreError(Exception):
    """The scoring run cannot start as asked (bad shards, model, output, device); one line for the user."""


@dataclass
class ScoreConfig:
    shards: str
    model: str
    output: str | None = None  # default: the shards' directory, when SHARDS is one local directory
    device: str = "auto"
    batch_size: int | None = None  # default: 256 on cuda, 64 on cpu
    precision: str | None = None  # default: bf16 on cuda, fp32 on cpu
    workers: int = 2
    overwrite: bool = False
    progress: bool = True


@dataclass
class Job:
    """One shard and the scores file it gets."""

    path: str
    name: str
    out: str
    tar_bytes: int
    expected: int | None  # samples, from sizes.json when it has the shard


# ------------------------------------------------------------------------------------------------ planning


def default_output(spec: str) -> str | None:
    """The shards' own directory when SHARDS is one local directory, else None (then --output is required)."""
    path = strip_file_scheme(spec)
    if "::" in spec or has_glob(path) or "{" in path or scheme_of(path) is not None:
        return None
    return path if os.path.isdir(path) else None


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ScoreError("--device cuda was asked for but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")


def model_threads(workers: int) -> int:
    """Torch threads for the model on the CPU: the cores the decoding workers leave (at least one), unless
    OMP_NUM_THREADS says otherwise. Two OpenMP threads sharing a core with busy workers wait for each other at every
    parallel region: measured 10x slower than one thread on a loaded 2-core machine."""
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - workers)


def scores_path(shards: ShardSet, output: str, path: str) -> str:
    return storage_for(output).join(output, shards.stem(path) + SCORES_SUFFIX)


def read_meta(path: str) -> dict | None:
    """The metadata a scores file carries, or None when it is not a scores file we can read."""
    try:
        with storage_for(path).open_read(path) as handle:
            schema = pq.read_schema(pa.BufferReader(handle.read()))
        return json.loads(schema.metadata[META_KEY])
    except Exception:  # not parquet, not ours, unreadable: the caller decides what that means
        return None


def plan(shards: ShardSet, output: str, model_id: str, precision: str, overwrite: bool):
    """(jobs to score, (job, metadata) of complete files to keep); ScoreError listing files that do not match."""
    stems = Counter(shards.stem(p) for p in shards.paths)
    twice = sorted(stem for stem, n in stems.items() if n > 1)
    if twice:
        raise ScoreError(f"several shards are named {twice[0]}.tar ({len(twice)} such names): their scores files "
                         f"would collide in one --output; score each directory on its own")
    sizes = shards.sizes()
    out_storage = storage_for(output)
    todo: list[Job] = []
    done: list[tuple[Job, dict]] = []
    conflicts: list[str] = []
    for path in shards.paths:
        try:
            tar_bytes = shards.size(path)
        except OSError as err:
            raise ScoreError(f"cannot read {path}: {err}") from err
        job = Job(path, shards.stem(path), scores_path(shards, output, path), tar_bytes, sizes[path])
        if overwrite or not out_storage.exists(job.out):
            todo.append(job)
            continue
        meta = read_meta(job.out)
        if meta is None:
            conflicts.append(f"{job.out} is not a scores file aligndata can read")
        elif meta.get("model") != model_id:
            conflicts.append(f"{job.name} was scored by {meta.get('model')}, not {model_id}")
        elif meta.get("precision") != precision:
            conflicts.append(f"{job.name} was scored at {meta.get('precision')}, not {precision} (--precision)")
        elif meta.get("shard_bytes") != job.tar_bytes:
            conflicts.append(f"{job.name}.tar changed since it was scored ({meta.get('shard_bytes')} bytes then, "
                             f"{job.tar_bytes} now)")
        else:
            done.append((job, meta))
    if conflicts:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise ScoreError(f"scores in {output} do not match this run: {conflicts[0]}{more}; pass --overwrite to "
                         f"replace them, or another --output")
    return todo, done


# ------------------------------------------------------------------------------------------------ the workers


def sample_uid(sample: Sample) -> str:
    meta = sample.meta or {}
    uid = meta.get("uid")
    return uid if isinstance(uid, str) and uid else sample.key


def prepare(sample: Sample, preprocess: Preprocess) -> tuple[str | None, dict | None, str | None]:
    """(reason it cannot be scored or None, image tensors, caption)."""
    data = sample.image
    if data is None:
        return "missing_image", None, None
    text = sample.strict_text
    if text is None:
        return "missing_caption", None, None
    try:
        img = transforms.decode(data)
    except transforms.BadImage:
        return "bad_image", None, None
    return None, preprocess.image(img), text


class ShardBatches(IterableDataset):
    """Batches of ``batch_size`` consecutive samples of each shard (a shard's last batch may be smaller; an empty
    shard has one empty batch), numbered through the whole run; worker w of W prepares the batches numbered w mod W.
    DataLoader takes one item from each worker in turn, so batches arrive in that order."""

    def __init__(self, urls: list[str], preprocess: Preprocess, batch_size: int) -> None:
        super().__init__()
        self.urls = urls
        self.preprocess = preprocess
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        first = 0  # run-wide number of the current shard's first batch
        for index, url in enumerate(self.urls):
            problems: list[str] = []
            mine: list[Sample] = []
            count = 0
            for sample in iter_shard(url, on_error=lambda _url, exn: problems.append(str(exn))):
                batch, offset = divmod(count, self.batch_size)
                if offset == 0 and count and (first + batch - 1) % workers == worker:
                    yield self._batch(index, mine, last=False)  # a sample follows it: not the shard's last
                    mine = []
                if (first + batch) % workers == worker:
                    mine.append(sample)
                count += 1
            batches = max(1, math.ceil(count / self.batch_size))
            if (first + batches - 1) % workers == worker:
                yield self._batch(index, mine, last=True, count=count, problems=problems)
            first += batches

    def _batch(self, index: int, samples: list[Sample], last: bool, count: int = 0,
               problems: list[str] | None = None) -> dict:
        reasons, images, texts = [], [], []
        for sample in samples:
            reason, image, text = prepare(sample, self.preprocess)
            reasons.append(reason)
            if reason is None:
                images.append(image)
                texts.append(text)
        return {
            "shard": index, "keys": [s.key for s in samples], "uids": [sample_uid(s) for s in samples],
            "reasons": reasons, "last": last, "count": count, "problems": problems or [],
            "images": {name: torch.stack([im[name] for im in images]) for name in images[0]} if images else None,
            "tokens": self.preprocess.texts(texts) if texts else None,
        }


# ------------------------------------------------------------------------------------------------ the run


@dataclass
class ShardRows:
    uids: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)
    reasons: list[str | None] = field(default_factory=list)


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@torch.no_grad()
def batch_scores(encoder: Encoder, batch: dict, device: torch.device) -> list[float | None]:
    scores: list[float | None] = [None] * len(batch["keys"])
    if batch["images"] is None:
        return scores
    image = encoder.image_embeddings(batch["images"], device)
    text = encoder.text_embeddings(batch["tokens"], device)
    values = iter((image * text).sum(dim=-1).cpu().tolist())
    for i, reason in enumerate(batch["reasons"]):
        if reason is None:
            scores[i] = next(values)
    return scores


def write_scores(job: Job, rows: ShardRows, model_id: str, precision: str, problems: list[str]) -> dict:
    failed = Counter(r for r in rows.reasons if r is not None)
    meta = {"model": model_id, "precision": precision, "shard": os.path.basename(job.path),
            "shard_bytes": job.tar_bytes, "samples": len(rows.keys), "scored": len(rows.keys) - sum(failed.values()),
            "failed": dict(sorted(failed.items())), "problems": problems}
    n = len(rows.keys)
    table = pa.table({
        "uid": pa.array(rows.uids, pa.string()),
        "key": pa.array(rows.keys, pa.string()),
        "score": pa.array(rows.scores, pa.float32()),
        "reason": pa.array(rows.reasons, pa.string()),
        "model": pa.array([model_id] * n, pa.string()),
    }).replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True)})
    write_bytes_atomic(job.out, parquet_bytes(table))
    return meta


def score(cfg: ScoreConfig) -> dict:
    """Score every shard of ``cfg.shards`` not already scored; write the files and the summary; return it."""
    if cfg.precision is not None and cfg.precision not in PRECISIONS:
        raise ScoreError(f"--precision must be one of {', '.join(PRECISIONS)}, got {cfg.precision!r}")
    try:
        shards = resolve(cfg.shards)
    except ShardSetError as err:
        raise ScoreError(str(err)) from err
    output = cfg.output or default_output(cfg.shards)
    if output is None:
        raise ScoreError(f"--output is required when SHARDS ({cfg.shards}) is not one local directory")
    device = pick_device(cfg.device)
    precision = cfg.precision or ("bf16" if device.type == "cuda" else "fp32")
    batch_size = cfg.batch_size or (256 if device.type == "cuda" else 64)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # forked workers + the tokenizer's threads deadlock
    start = time.perf_counter()
    try:
        encoder = load_encoder(cfg.model).to(device)
    except ModelError as err:
        raise ScoreError(str(err)) from err
    load_seconds = time.perf_counter() - start
    try:
        todo, done = plan(shards, output, encoder.model_id, precision, cfg.overwrite)
    except ShardSetError as err:  # a broken sizes.json
        raise ScoreError(str(err)) from err
    if done:
        log.info("%d of %d shards already scored by %s: kept", len(done), len(shards), encoder.model_id)
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(model_threads(cfg.workers))
    start = time.perf_counter()
    try:
        written = _score_shards(cfg, todo, encoder, device, precision, batch_size)
    finally:
        seconds = time.perf_counter() - start
        used_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
    metas = [meta for _, meta in done] + written
    samples_now = sum(meta["samples"] for meta in written)
    failed: Counter = Counter()
    for meta in metas:
        failed.update(meta["failed"])
    summary = {
        "model": encoder.model_id, "kind": encoder.kind, "model_settings": encoder.settings,
        "precision": precision, "device": str(device), "batch_size": batch_size, "workers": cfg.workers,
        "torch_threads": used_threads,
        "output": output, "shards": len(metas), "samples": sum(meta["samples"] for meta in metas),
        "scored": sum(meta["scored"] for meta in metas), "failed": dict(sorted(failed.items())),
        "shards_scored_now": len(written), "shards_kept": len(done), "samples_scored_now": samples_now,
        "seconds": round(seconds, 3), "samples_per_s": round(samples_now / seconds, 2) if samples_now else None,
        "model_load_seconds": round(load_seconds, 3),
        "shard_problems": {os.path.splitext(m["shard"])[0]: m["problems"] for m in metas if m["problems"]},
    }
    write_json_atomic(storage_for(output).join(output, SUMMARY_NAME), summary)
    return summary


def _score_shards(cfg: ScoreConfig, todo: list[Job], encoder: Encoder, device: torch.device, precision: str,
                  batch_size: int) -> list[dict]:
    if not todo:
        return []
    expected = [job.expected for job in todo]
    total = None if None in expected else sum(expected)
    dataset = ShardBatches([job.path for job in todo], encoder.preprocess, batch_size)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=cfg.workers,
                                         prefetch_factor=4 if cfg.workers else None)
    rows: dict[int, ShardRows] = {}
    written: list[dict] = []
    bar = progress_bar(total=total, desc="score", unit="sample") if cfg.progress else None
    try:
        with autocast(device, precision):
            for batch in loader:
                index = batch["shard"]
                acc = rows.setdefault(index, ShardRows())
                acc.uids += batch["uids"]
                acc.keys += batch["keys"]
                acc.reasons += batch["reasons"]
                acc.scores += batch_scores(encoder, batch, device)
                if bar is not None:
                    bar.update(len(batch["keys"]))
                if batch["last"]:
                    job = todo[index]
                    problems = list(batch["problems"])
                    if job.expected is not None and job.expected != batch["count"]:
                        problems.append(f"sizes.json says {job.expected} samples, the tar holds {batch['count']}")
                    for problem in problems:
                        log.warning("shard %s: %s", job.name, problem)
                    written.append(write_scores(job, rows.pop(index), encoder.model_id, precision, problems))
    finally:
        if bar is not None:
            bar.close()
    return written

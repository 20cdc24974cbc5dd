"""The fetch stage: each unique URL downloaded once, decoded, checked and re-encoded inside a thread pool.

Work arrives a shard at a time (see shard_stage.py): the DoFn fetches the shard's URLs concurrently with a
thread pool sharing one ``Fetcher``, and writes the shard itself. Fetching is I/O-bound, so many threads wait
on the network at once (``--fetch-threads``); decoding, checking and re-encoding is CPU-bound, so only
``--image-threads`` of them (default: the worker's cores) do it at a time. Letting all 32 decode at once cost
~1-1.5 ms more CPU per image (GIL hand-offs, caches thrashed by 32 decoded images), ~10% of the total.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam
from apache_beam.metrics import Metrics

from aligndata.pipeline.config import CurateConfig
from aligndata.pipeline.heap import keeping_large_blocks
from aligndata.pipeline.outputs import FETCH_STATS, NAMESPACE, REJECTS, emit, reject
from aligndata.fetch.client import FetchConfig, Fetcher
from aligndata.fetch.cache import FetchCache, ShardCache, default_cache_dir
from aligndata.images.content_checks import ImageChecks
from aligndata.pipeline.progress import ProgressWriter
from aligndata.images.process import ImageConfig, ImageOutcome, process_image
from aligndata.images.resize_pixels import use_one_thread
from aligndata.filters.language import detection_on
from aligndata.shards.contract import LANGUAGE_COLUMNS
from aligndata.shards.outcomes import Failure
from aligndata.shards.writer import Sample, write_shard


def row_meta(row: dict) -> dict:
    """A row's own fields: every extra input column, then uid, url, caption and page_url."""
    meta = dict(row.get("extra") or {})
    meta.update(uid=row["uid"], url=row["url"], caption=row["caption"], page_url=row.get("page_url"))
    return meta


def job_identity(cfg: CurateConfig) -> str:
    """The job as the resume cache knows it: the options that decide the output (what a resume must match)."""
    return hashlib.sha256(json.dumps(cfg.identity(), sort_keys=True, default=str).encode()).hexdigest()[:32]


_PROCESSED_FIELDS = tuple(f.name for f in dataclasses.fields(ImageOutcome) if f.name != "image_bytes")


def _processed_fields(outcome: ImageOutcome) -> dict:
    """What the resume cache keeps of an image's outcome besides its bytes (JSON values: str, int or None, so a
    shallow dict; ``dataclasses.asdict`` deep-copies each one: 9 against 0.7 µs a photo)."""
    return {name: getattr(outcome, name) for name in _PROCESSED_FIELDS}


def sample_meta(row: dict, outcome) -> dict:
    """The sample's .json: the contract's fields plus every extra input column (and, with language detection
    on, the language fields the row stage added to them)."""
    meta = row_meta(row)
    meta.update(
        key=row["uid"],
        width=outcome.width,
        height=outcome.height,
        original_width=outcome.original_width,
        original_height=outcome.original_height,
        sha256=outcome.sha256,
        phash=outcome.phash,
    )
    return meta


class FetchShard(beam.DoFn):
    """Download one shard's URLs (thread pool), check and re-encode the images, and write the shard.

    Input: (shard index, [(url, surviving rows), ...]). Image bytes never leave this worker: no shuffle carries
    them, which is what makes the stage as cheap as a plain downloader. Outputs the shard's stats dict; rejected
    rows and per-batch fetch counters go to tagged outputs.
    """

    def __init__(self, cfg: CurateConfig):
        self.cfg = cfg

    def setup(self):
        self.fetcher = Fetcher(FetchConfig.from_options(self.cfg, self.cfg.max_download_bytes))
        self.checks = ImageChecks(self.cfg.eval_index, self.cfg.eval_hamming, self.cfg.nsfw, self.cfg.nsfw_threshold)
        self.checks.setup()  # loads the eval index once per worker
        # NSFW keywords alone (the default) judge text before the download: no per-image check then
        self.image_check = self.checks.check_decoded if self.checks.checks_images else None
        self.cache = FetchCache(self.cfg.cache_dir or default_cache_dir(self.cfg.output), job_identity(self.cfg))
        self.image_cfg = ImageConfig.from_options(self.cfg)
        use_one_thread()  # one image per core already (image_slots); OpenCV's own pool would only add hand-offs
        self.pool = ThreadPoolExecutor(max_workers=self.cfg.fetch_threads, thread_name_prefix="aligndata-fetch")
        self.fetched = Metrics.counter(NAMESPACE, "urls_fetched")
        self.downloaded_bytes = Metrics.counter(NAMESPACE, "bytes_downloaded")
        self.kept = Metrics.counter(NAMESPACE, "samples_kept")
        self.progress = ProgressWriter(self.cfg.progress_dir)
        self.image_slots = threading.BoundedSemaphore(self.cfg.image_threads or os.cpu_count() or 1)
        # the fields language detection adds to every sample, typed alike in every shard (none when it is off)
        self.typed = LANGUAGE_COLUMNS if detection_on(self.cfg) else None

    def teardown(self):
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.fetcher.close()

    def _one(self, url: str, cache: ShardCache):
        """(fetch result, image outcome or None, bytes downloaded, whether it came from the resume cache).

        A download is recorded in the cache once processed, as its outcome (fetch/cache.py): a resumed run
        replays that without downloading or decoding again; a failure is recorded as it happens."""
        hit = cache.get(url)
        if hit is not None and hit.processed is not None:
            fields = hit.processed
            image = hit.payload if fields["reason"] is None else None
            return hit.result, ImageOutcome(**fields, image_bytes=image), hit.downloaded, True
        if hit is not None:  # a download (a log of an earlier version) or a failure
            result = hit.result
        else:
            result = self.fetcher.fetch(url)
            if not result.ok:
                cache.put(result)
        if not result.ok:
            return result, None, 0, hit is not None
        with self.image_slots:
            outcome = process_image(result.data, self.image_cfg, self.image_check)
        if hit is None:
            cache.put(result, _processed_fields(outcome), outcome.image_bytes)
        return result, outcome, len(result.data), hit is not None

    def process(self, element):
        started = time.time() if self.cfg.shard_times else None  # wall clock, as img2dataset's start_time
        index, groups = element
        groups = sorted(groups, key=lambda kv: kv[0])  # a stable order for the fetch (the tar sorts anyway)
        samples: list[Sample] = []
        failures: list[Failure] = []  # every row of the shard that did not become a sample (its _stats.json)
        stats: dict[str, int] = {}

        def rejected(row, reason, detail=""):
            failures.append(Failure(row["uid"], row_meta(row), reason, detail))
            return emit(REJECTS, reject(row, reason, detail))

        def bump(key, n=1):
            stats[key] = stats.get(key, 0) + n

        # NSFW words in a caption or URL are known before downloading: a URL none of whose rows could be kept is
        # not downloaded at all (its rows are recorded as nsfw; the rules that need the image cannot apply).
        text_hits = [[self.checks.check_text(row["caption"], url) for row in rows] for url, rows in groups]
        to_fetch = []
        for (url, rows), hits in zip(groups, text_hits):
            if all(hits):
                bump("urls_skipped_nsfw_text")
                for row, hit in zip(rows, hits):
                    yield rejected(row, *hit)
                self.progress.add(urls_fetched=1, rejected=len(rows))
            else:
                to_fetch.append((url, rows, hits))

        # each image's short-lived large blocks are reused, not mmapped afresh (heap.py: 2.8 ms of CPU a photo)
        with keeping_large_blocks():
            with self.cache.for_shard(index) as cache:
                # pool.map yields in order and keeps every thread busy; progress is reported as results arrive
                results = self.pool.map(lambda item: self._one(item[0], cache), to_fetch)
                yield from self._record(to_fetch, results, samples, bump, rejected)
            yield emit(FETCH_STATS, stats)
            yield write_shard(self.cfg.output, index, samples, failures, digits=self.cfg.shard_digits,
                              failed_rows=self.cfg.parquet_failed_rows, started=started, typed=self.typed)
        self.progress.flush()

    def _record(self, to_fetch, results, samples: list[Sample], bump, rejected):
        """Count each URL's outcome; yield its rejected rows (``rejected`` also keeps them for the shard's stats),
        append its kept samples to ``samples``."""
        for (url, rows, hits), (result, outcome, downloaded, cached) in zip(to_fetch, results):
            self.fetched.inc()
            bump("urls_fetched")
            bump("fetch_attempts", result.attempts)
            if cached:
                bump("urls_from_cache")
            kept = 0
            if not result.ok:
                bump(f"failed:{result.reason}:{result.detail.split(':')[0]}")
                for row in rows:
                    yield rejected(row, result.reason, result.detail)
            else:
                bump("urls_downloaded")
                bump("bytes_downloaded", downloaded)
                self.downloaded_bytes.inc(downloaded)
                if outcome.reason:
                    bump(f"image_rejected:{outcome.reason}")
                    for row in rows:
                        yield rejected(row, outcome.reason, outcome.detail)
                else:
                    bump("urls_kept")
                    for row, hit in zip(rows, hits):
                        if hit:
                            yield rejected(row, *hit)
                            continue
                        kept += 1
                        samples.append(Sample(key=row["uid"], image=outcome.image_bytes, image_ext=outcome.ext,
                                              text=row["caption"], meta=sample_meta(row, outcome)))
                    self.kept.inc(kept)
            self.progress.add(urls_fetched=1, bytes_downloaded=downloaded, kept=kept,
                              rejected=len(rows) - kept)

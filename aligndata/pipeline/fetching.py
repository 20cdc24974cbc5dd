"""The fetch stage: each unique URL downloaded once, decoded, checked and re-encoded inside a thread pool.

Fetching is I/O-bound, so concurrency lives inside the DoFn: elements (one URL with its surviving rows) are
buffered and processed a batch at a time by a thread pool sharing one ``Fetcher`` (one requests.Session).
Pillow releases the GIL while decoding, resizing and encoding, so image work overlaps too.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam
from apache_beam.metrics import Metrics

from aligndata import __version__
from aligndata.pipeline.config import CurateConfig
from aligndata.pipeline.elements import FETCH_STATS, MAIN, NAMESPACE, REJECTS, emit, reject
from aligndata.pipeline.fetch import FetchConfig, Fetcher
from aligndata.pipeline.progress import ProgressWriter
from aligndata.pipeline.resize import ImageConfig, process_image


def fetch_config(cfg: CurateConfig) -> FetchConfig:
    kwargs = dict(
        timeout=cfg.timeout,
        max_bytes=cfg.max_download_bytes,
        retries=cfg.retries,
        allow_private_networks=cfg.allow_private_networks,
        pool_maxsize=cfg.fetch_threads,  # one pooled connection per thread, no "pool is full" churn
    )
    if cfg.total_timeout is not None:
        kwargs["total_timeout"] = cfg.total_timeout
    if cfg.user_agent:
        kwargs["user_agent"] = cfg.user_agent
    if cfg.contact:
        kwargs["contact"] = cfg.contact
    return FetchConfig(**kwargs)


def image_config(cfg: CurateConfig) -> ImageConfig:
    return ImageConfig(
        min_side=cfg.min_side,
        max_aspect_ratio=cfg.max_aspect_ratio,
        resize_mode=cfg.resize_mode,
        image_size=cfg.image_size,
        encode_format=cfg.encode_format,
        encode_quality=cfg.encode_quality,
        max_pixels=cfg.max_pixels,
    )


def sample_meta(row: dict, outcome) -> dict:
    """The sample's .json: the contract's fields plus every extra input column."""
    meta = dict(row.get("extra") or {})
    meta.update(
        key=row["uid"],
        uid=row["uid"],
        url=row["url"],
        caption=row["caption"],
        page_url=row.get("page_url"),
        width=outcome.width,
        height=outcome.height,
        original_width=outcome.original_width,
        original_height=outcome.original_height,
        sha256=outcome.sha256,
        phash=outcome.phash,
    )
    return meta


class FetchAndProcess(beam.DoFn):
    def __init__(self, cfg: CurateConfig, batch_size: int | None = None):
        self.cfg = cfg
        self.batch_size = batch_size or max(8, 4 * cfg.fetch_threads)

    def setup(self):
        self.fetcher = Fetcher(fetch_config(self.cfg))
        self.image_cfg = image_config(self.cfg)
        self.pool = ThreadPoolExecutor(max_workers=self.cfg.fetch_threads, thread_name_prefix="aligndata-fetch")
        self.fetched = Metrics.counter(NAMESPACE, "urls_fetched")
        self.downloaded_bytes = Metrics.counter(NAMESPACE, "bytes_downloaded")
        self.kept = Metrics.counter(NAMESPACE, "samples_kept")
        self.progress = ProgressWriter(self.cfg.progress_dir)

    def teardown(self):
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.fetcher.close()

    def start_bundle(self):
        self.buffer = []

    def process(self, element):
        self.buffer.append(element)
        if len(self.buffer) >= self.batch_size:
            yield from self._flush()

    def finish_bundle(self):
        yield from self._flush(from_finish_bundle=True)
        self.progress.flush()

    def _one(self, url: str):
        result = self.fetcher.fetch(url)
        outcome = process_image(result.data, self.image_cfg) if result.ok else None
        return result, outcome

    def _flush(self, from_finish_bundle=False):
        def out(tag, value):
            return emit(tag, value, from_finish_bundle)

        batch, self.buffer = self.buffer, []
        if not batch:
            return
        stats: dict[str, int] = {}
        kept = 0

        def bump(key, n=1):
            stats[key] = stats.get(key, 0) + n

        for (url, rows), (result, outcome) in zip(batch, self.pool.map(lambda kv: self._one(kv[0]), batch)):
            self.fetched.inc()
            bump("urls_fetched")
            bump("fetch_attempts", result.attempts)
            if not result.ok:
                bump(f"failed:{result.reason}:{result.detail.split(':')[0]}")
                for row in rows:
                    yield out(REJECTS, reject(row, result.reason, result.detail))
                continue
            bump("urls_downloaded")
            bump("bytes_downloaded", len(result.data))
            self.downloaded_bytes.inc(len(result.data))
            if outcome.reason:
                bump(f"image_rejected:{outcome.reason}")
                for row in rows:
                    yield out(REJECTS, reject(row, outcome.reason, outcome.detail))
                continue
            bump("urls_kept")
            kept += len(rows)
            for row in rows:
                self.kept.inc()
                yield out(
                    MAIN,
                    {
                        "uid": row["uid"],
                        "image": outcome.image_bytes,
                        "ext": outcome.ext,
                        "caption": row["caption"],
                        "meta": sample_meta(row, outcome),
                    }
                )
        self.progress.add(
            urls_fetched=len(batch),
            bytes_downloaded=stats.get("bytes_downloaded", 0),
            kept=kept,
            rejected=sum(len(rows) for _, rows in batch) - kept,
        )
        yield out(FETCH_STATS, stats)

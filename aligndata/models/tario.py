"""Read raw samples (undecoded member bytes grouped by key) from WebDataset tars through fsspec.

Uses webdataset's own tar streaming and key grouping, so the reading semantics (first dot splits key from
extension, members of a sample adjacent) are exactly webdataset's. A shard that cannot be opened or is truncated is
reported to ``on_error`` and reading moves on: one bad file must not kill a long training run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator

import fsspec
from webdataset.tariterators import group_by_keys, tar_file_iterator

log = logging.getLogger(__name__)

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def iter_shard(url: str, on_error: Callable[[str, Exception], None] | None = None) -> Iterator[dict]:
    """Samples of one shard as dicts: ``__key__``, ``__url__`` and one bytes entry per member extension."""
    errors: list[Exception] = []

    def handler(exn: Exception) -> bool:
        errors.append(exn)
        return False  # a broken tar stream cannot be resynchronised: stop this shard

    try:
        with fsspec.open(url, "rb") as stream:
            files = ({**f, "__url__": url} for f in tar_file_iterator(stream, handler=handler))
            yield from group_by_keys(files, handler=handler)
    except Exception as exn:  # unreadable or truncated tar: report, keep going with the next shard
        errors.append(exn)
    for exn in errors:
        if on_error is not None:
            on_error(url, exn)
        else:
            log.warning("shard %s: %s", url, exn)


def iter_shards(urls: Iterable[str], on_error=None) -> Iterator[dict]:
    for url in urls:
        yield from iter_shard(url, on_error)


def image_bytes(sample: dict) -> bytes | None:
    for ext in IMAGE_EXTS:
        if ext in sample:
            return sample[ext]
    return None


def caption(sample: dict) -> str | None:
    """The sample's text, stripped; None when missing, undecodable or empty."""
    raw = sample.get("txt")
    if raw is None:
        return None
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    return text or None


def class_id(sample: dict) -> int | None:
    raw = sample.get("cls")
    if raw is None:
        return None
    try:
        return int(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None

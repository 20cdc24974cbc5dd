"""Shared pieces of the Beam stages: output tags, the ledger row, and emitting from finish_bundle."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

NAMESPACE = "aligndata"
MAIN = None
REJECTS = "rejects"
NGRAMS = "ngrams"
FETCH_STATS = "fetch_stats"
PAGE_URLS = "page_urls"
EXTRACTION = "extraction"
RECORDS = "records"  # (ledger part, a batch of packed row records)
PAIRS = "pairs"  # (uid, packed row): the rows of a hot text, to their pair group
TEXTS = "texts"  # (text hash, caption): passing texts for the rare-token join
VERDICTS = "verdicts"  # (ledger part, a batch of packed verdicts)
# Built once: GlobalWindow() parses a timestamp proto on every construction (measurable per element).
_GLOBAL_WINDOWS = (GlobalWindow(),)
_REJECT_COUNTERS: dict = {}


def reject(candidate: dict, reason: str, detail: str = "") -> dict:
    """The ledger row for a rejected input row (and a Beam counter per reason)."""
    counter = _REJECT_COUNTERS.get(reason)
    if counter is None:
        counter = _REJECT_COUNTERS[reason] = Metrics.counter(NAMESPACE, f"rejected_{reason}")
    counter.inc()
    return {
        "uid": candidate["uid"],
        "url": candidate["url"],
        "caption": candidate["caption"],
        "reason": reason,
        "detail": detail,
        "src": candidate["src"],
        "row": candidate["row"],
    }


def emit(tag: str | None, value, from_finish_bundle: bool = False):
    """An output for ``tag`` (None = main). finish_bundle must give its elements a window and timestamp."""
    if from_finish_bundle:
        value = WindowedValue(value, MIN_TIMESTAMP, _GLOBAL_WINDOWS)
    return value if tag is None else beam.pvalue.TaggedOutput(tag, value)

"""What became of each row assigned to a shard, in img2dataset's terms: ``status`` and ``error_message`` per row,
``count`` / ``successes`` / ``failed_to_download`` / ``failed_to_resize`` / ``status_dict`` per shard.

img2dataset (rom1504/img2dataset, downloader.py and logger.py) gives every row of a shard one ``status``:
``success``, ``failed_to_download`` (the download raised, X-Robots-Tag refused it, or a hash mismatched) or
``failed_to_resize`` (the resizer refused or could not decode the image: "image too small", "aspect ratio too
large", a decode error). Its ``_stats.json`` counts them (``count`` = rows of the shard = the sum of the three)
and ``status_dict`` counts each error message, plus ``"success"``. Ours follow from the rule registry: a reason
decided by the download (stage ``fetch``) is ``failed_to_download``; one decided on the image or on what it shows
(stages ``image`` and ``content``: decoding, size and aspect rules, eval-set duplicates, NSFW) is
``failed_to_resize``, as img2dataset's own size and aspect filters are. The error message is ``REASON: DETAIL``
(``download_failed: http_404``, ``image_too_small: 300x200``), the reason code and detail of the rejected ledger.

Readers of a shard's parquet take only ``status == "success"`` rows as samples (``success_rows``); a parquet
without a status column (an older version, another tool) is all samples.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from aligndata.filters import registry

SUCCESS = "success"
FAILED_TO_DOWNLOAD = "failed_to_download"
FAILED_TO_RESIZE = "failed_to_resize"
STATUSES = (SUCCESS, FAILED_TO_DOWNLOAD, FAILED_TO_RESIZE)

# The parquet's per-row outcome columns (img2dataset's names and types); error_message is null for a success.
STATUS_COLUMNS: dict[str, pa.DataType] = {"status": pa.string(), "error_message": pa.string()}

_STATUS_BY_STAGE = {registry.FETCH: FAILED_TO_DOWNLOAD, registry.IMAGE: FAILED_TO_RESIZE,
                    registry.CONTENT: FAILED_TO_RESIZE}


def status_of(reason: str) -> str:
    """img2dataset's status for a row rejected in the fetch stage with ``reason``."""
    rule = registry.BY_REASON.get(reason)
    if rule is None or rule.stage not in _STATUS_BY_STAGE:
        raise ValueError(f"reason {reason!r} is not decided after a row is assigned to a shard")
    return _STATUS_BY_STAGE[rule.stage]


def error_message(reason: str, detail: str) -> str:
    return f"{reason}: {detail}" if detail else reason


@dataclass(frozen=True)
class Failure:
    """A row assigned to a shard that did not become a sample. ``meta``: the row's own fields (uid, url, caption,
    page_url, extra columns), written as its parquet row when failed rows are asked for."""

    key: str
    meta: dict
    reason: str
    detail: str = ""

    @property
    def status(self) -> str:
        return status_of(self.reason)

    @property
    def error_message(self) -> str:
        return error_message(self.reason, self.detail)


def shard_counters(successes: int, failures: Iterable[Failure]) -> dict:
    """img2dataset's per-shard counters: count (rows assigned), successes, failed_to_download, failed_to_resize
    and status_dict ({"success": successes, error message: rows, ...}, keys sorted)."""
    by_status: Counter = Counter()
    messages: Counter = Counter()
    for failure in failures:
        by_status[failure.status] += 1
        messages[failure.error_message] += 1
    if successes:
        messages[SUCCESS] += successes
    return {
        "count": successes + by_status[FAILED_TO_DOWNLOAD] + by_status[FAILED_TO_RESIZE],
        "successes": successes,
        "failed_to_download": by_status[FAILED_TO_DOWNLOAD],
        "failed_to_resize": by_status[FAILED_TO_RESIZE],
        "status_dict": dict(sorted(messages.items())),
    }


def success_mask(table: pa.Table | pa.RecordBatch) -> pa.Array | None:
    """True for the rows that are samples; None when every row is (no status column). A status column that is
    not text raises ValueError."""
    if "status" not in table.schema.names:
        return None
    column = table.column("status")
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise ValueError(f"its status column holds {column.type}, not img2dataset's text (success, ...)")
    return pc.fill_null(pc.equal(column, SUCCESS), False)


def success_rows(table: pa.Table) -> pa.Table:
    """The rows of a shard's parquet that are samples (``status == "success"``, or all without a status column)."""
    mask = success_mask(table)
    return table if mask is None else table.filter(mask)


def with_status(columns: list[str] | None, names: list[str]) -> list[str] | None:
    """``columns`` to read, plus ``status`` when the file has one (so success_rows can filter)."""
    if columns is None or "status" not in names or "status" in columns:
        return columns
    return [*columns, "status"]

"""Atomic writes: a file is written under a temporary name in its final directory, then renamed into place.

A crash leaves at most a hidden ``.NAME.tmp-<hex>`` file, never a partial file under the final name, and a retried
Beam bundle rewrites the same bytes over the same name. Works on every backend of :mod:`aligndata.io.storage`
(on object stores the rename is a copy, and an object is visible only once complete anyway).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import uuid
from collections.abc import Iterator
from typing import IO, Any

from aligndata.io.storage import storage_for


@contextlib.contextmanager
def atomic_writer(path: str) -> Iterator[IO[bytes]]:
    """Yield a writable file at a temporary sibling of ``path``; rename it onto ``path`` only on success.

    Missing parent directories are created (as Beam's local filesystem did)."""
    storage = storage_for(path)
    temp_path = storage.join(storage.parent(path), f".{storage.basename(path)}.tmp-{uuid.uuid4().hex}")
    try:
        with storage.open_write(temp_path) as handle:
            yield handle
        storage.replace(temp_path, path)
    except BaseException:
        _delete_quietly(storage, temp_path)
        raise


def _delete_quietly(storage, path: str) -> None:
    try:
        storage.delete(path)
    except Exception:  # cleanup must not hide the error that got us here
        pass


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file + rename (readers never see a partial file)."""
    with atomic_writer(path) as handle:
        handle.write(data)


def write_json_atomic(path: str, obj: Any) -> None:
    """Write JSON with sorted keys, indent 2 and a trailing newline (stable bytes for the same object)."""
    text = json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, default=json_default) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def json_default(value: Any) -> Any:
    """Serialise the non-JSON values extra input columns bring (timestamps, numpy/pyarrow scalars)."""
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    raise TypeError(f"metadata value {value!r} of type {type(value).__name__} is not JSON serialisable")

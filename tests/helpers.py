"""Small helpers shared by the test modules (imported as ``from helpers import ...``, like ``httpserver``).

pytest puts tests/ on sys.path (tests/conftest.py sits there and tests/ is not a package), so these import
without a package. Fixtures live in conftest.py; plain functions and constants live here.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

# The real samples (LAION/CC3M alt-texts, HTML pages, WARCs, photos) beside the checkout, absent in a fresh clone.
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
needs_real = pytest.mark.skipif(not REAL.exists(), reason="../shared/data/real is absent (fresh clone)")
COCO = REAL / "photos" / "coco_val2017"  # real photos
needs_coco = pytest.mark.skipif(not COCO.exists(), reason="real COCO photos not available (../shared/data/real)")


def write_pairs(path: Path, rows: Iterable[Sequence], **columns: list) -> str:
    """A pairs table for curate: ``url`` and ``caption`` from each row's first two items (more are ignored,
    e.g. an expected outcome), plus any extra ``columns`` given as lists. Parquet, or JSON lines for .jsonl."""
    rows = list(rows)
    data = {"url": [r[0] for r in rows], "caption": [r[1] for r in rows], **columns}
    path = Path(path)
    if path.suffix == ".jsonl":
        keys = list(data)
        with open(path, "w", encoding="utf-8") as f:
            for values in zip(*data.values()):
                f.write(json.dumps(dict(zip(keys, values))) + "\n")
    else:
        pq.write_table(pa.table(data), path)
    return str(path)


def read_report(out: Path) -> dict:
    """report.json of a curate output directory."""
    return json.loads((Path(out) / "report.json").read_text())


def iter_samples(out: Path) -> Iterator[dict]:
    """Every sample of the .tar shards in ``out``, in shard order, as webdataset reads them."""
    import webdataset as wds

    for tar in sorted(Path(out).glob("*.tar")):
        yield from wds.WebDataset(str(tar), shardshuffle=False)


def shard_samples(out: Path) -> dict[str, dict]:
    """The samples of ``out``'s shards by key."""
    return {sample["__key__"]: sample for sample in iter_samples(out)}


def shard_metas(out: Path) -> list[dict]:
    """The .json metadata of every sample in ``out``'s shards, in shard order (nothing merged)."""
    return [json.loads(sample["json"]) for sample in iter_samples(out)]


def encode(image: Image.Image, fmt: str = "JPEG", **save_kwargs) -> bytes:
    """``image`` encoded in ``fmt`` (PIL's save options pass through)."""
    out = io.BytesIO()
    image.save(out, fmt, **save_kwargs)
    return out.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG claiming width x height with a tiny IDAT: costs nothing unless someone decodes it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 16)) \
        + png_chunk(b"IEND", b"")

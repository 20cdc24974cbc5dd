"""A plain-Python reference for ``aligndata dedup`` (the test oracle): every pair of samples compared, a
union-find, the keep rule written out longhand. Quadratic on purpose; for a few hundred samples.

Also the test corpus builder: real images through the real per-image chain (``process_image``) into shards
written by the real writer, so the job reads exactly what curate would have written.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from aligndata.images.process import ImageConfig, process_image
from aligndata.shards.writer import Sample, write_shard, write_sizes

_IMAGE_CFG = ImageConfig()


def uid_of(url: str, caption: str) -> str:
    """curate's uid: 32 hex chars of sha256(url TAB caption)."""
    return hashlib.sha256(f"{url}\t{caption}".encode()).hexdigest()[:32]


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def sample(data: bytes, caption: str, url: str) -> Sample:
    """A sample as curate writes it for these fetched bytes (sha256 of the bytes, pHash of the decoded image)."""
    outcome = process_image(data, _IMAGE_CFG)
    if outcome.reason is not None:
        raise ValueError(f"test image rejected: {outcome.reason} {outcome.detail}")
    uid = uid_of(url, caption)
    meta = {"key": uid, "uid": uid, "url": url, "caption": caption, "page_url": None, "width": outcome.width,
            "height": outcome.height, "original_width": outcome.original_width,
            "original_height": outcome.original_height, "sha256": outcome.sha256, "phash": outcome.phash}
    return Sample(uid, outcome.image_bytes, outcome.ext, caption, meta)


def write_corpus(directory: Path, samples: list[Sample], shards: int) -> str:
    """Deal the samples into ``shards`` shards (round robin) with the real writer; returns the directory."""
    sizes = {}
    for index in range(shards):
        stats = write_shard(str(directory), index, samples[index::shards])
        sizes[f"{stats['shard']}.tar"] = stats["count"]
    write_sizes(str(directory), sizes)
    return str(directory)


def shard_rows(directory: Path) -> list[dict]:
    """Every row of the shards' parquet, with its position (shard index << 32 | row), in SHARDS order."""
    rows = []
    for index, path in enumerate(sorted(Path(directory).glob("*.parquet"))):
        table = pq.read_table(path, columns=["uid", "sha256", "phash", "caption"]).to_pylist()
        for row, r in enumerate(table):
            rows.append({**r, "position": index << 32 | row})
    return rows


def reference_groups(rows: list[dict], hamming: int, exact_only: bool = False) -> set[tuple]:
    """{(uid, group, keep, kind)} as the job must write it, by comparing every pair."""
    n = len(rows)
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    phashes = [int(r["phash"], 16) for r in rows] if not exact_only else None
    for i in range(n):
        for j in range(i + 1, n):
            same = rows[i]["sha256"] == rows[j]["sha256"]
            near = not exact_only and (phashes[i] ^ phashes[j]).bit_count() <= hamming
            if same or near:
                a, b = find(i), find(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(find(i), []).append(i)
    out = set()
    for group_rows in members.values():
        if len(group_rows) < 2:
            continue
        group = min(rows[i]["position"] for i in group_rows)
        kind = "exact" if len({rows[i]["sha256"] for i in group_rows}) == 1 else "near"
        votes: dict[str, list[str]] = {}
        for i in group_rows:
            votes.setdefault((rows[i]["caption"] or "").lower(), []).append(rows[i]["uid"])
        most = max(len(uids) for uids in votes.values())
        keep = min(min(uids) for uids in votes.values() if len(uids) == most)
        out |= {(rows[i]["uid"], group, rows[i]["uid"] == keep, kind) for i in group_rows}
    return out

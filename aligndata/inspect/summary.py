"""`inspect summary`: counts, sizes and distributions of a shard set.

Fast path: when every shard has its ``NAME.parquet`` (curate writes one), only those small files are read
(captions, URLs, sizes). Otherwise, or with ``--scan``, the tars themselves are read; image sizes then come
from each sample's .json, or from the image header when the .json lacks them.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from aligndata.filters.text import tokenize
from aligndata.inspect.scan import metadata_table, scan
from aligndata.shards.spec import ShardSet

# Function words dominate any caption corpus; "top words" is about content, so these are left out.
STOPWORDS = frozenset(
    "a an the and or of in on at to for with by from as is are was were be been it its this that these those "
    "his her their our your my he she they we you i de la le et".split()
)
TOP_N = 10
DISTRIBUTIONS = ("width", "height", "original_width", "original_height", "aspect_ratio", "caption_chars",
                 "caption_words")


def describe(values) -> dict:
    """count, min, p5, p25, median, p75, p95, max, mean of the non-missing values (None entries when empty)."""
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    if arr.size == 0:
        return {"count": 0, **{k: None for k in ("min", "p5", "p25", "median", "p75", "p95", "max", "mean")}}
    p5, p25, p50, p75, p95 = np.percentile(arr, [5, 25, 50, 75, 95])
    return {
        "count": int(arr.size), "min": _num(arr.min()), "p5": _num(p5), "p25": _num(p25), "median": _num(p50),
        "p75": _num(p75), "p95": _num(p95), "max": _num(arr.max()), "mean": _num(arr.mean()),
    }


def _num(x) -> float | int:
    x = float(x)
    return int(x) if x.is_integer() else round(x, 3)


def aspect_ratio(width, height) -> float | None:
    if not width or not height:
        return None
    return max(width, height) / min(width, height)


def domain(url) -> str | None:
    if not isinstance(url, str):
        return None
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host.lower() if host else None


class _Collector:
    def __init__(self):
        self.columns = {name: [] for name in DISTRIBUTIONS}
        self.domains: Counter = Counter()
        self.words: Counter = Counter()
        self.samples = 0

    def add(self, caption, url, width, height, original_width, original_height) -> None:
        self.samples += 1
        words = tokenize(caption) if isinstance(caption, str) else []
        self.columns["width"].append(width)
        self.columns["height"].append(height)
        self.columns["original_width"].append(original_width)
        self.columns["original_height"].append(original_height)
        # ALIGN's aspect rule looks at the fetched image, so prefer the original size.
        self.columns["aspect_ratio"].append(aspect_ratio(original_width or width, original_height or height))
        self.columns["caption_chars"].append(len(caption) if isinstance(caption, str) else None)
        self.columns["caption_words"].append(len(words) if isinstance(caption, str) else None)
        self.words.update(w for w in words if w not in STOPWORDS)
        host = domain(url)
        if host:
            self.domains[host] += 1


def summarize(shards: ShardSet, force_scan: bool = False) -> dict:
    collector = _Collector()
    table = None if force_scan else metadata_table(
        shards, ["caption", "url", "width", "height", "original_width", "original_height"])
    if table is not None:
        source = "parquet"
        cols = {name: (table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows)
                for name in ("caption", "url", "width", "height", "original_width", "original_height")}
        for row in zip(*cols.values()):
            collector.add(*row)
    else:
        source = "tars"
        for sample in scan(shards):
            meta = sample.meta or {}
            width, height = _int(meta.get("width")), _int(meta.get("height"))
            if (width is None or height is None) and sample.image:
                width, height = _header_size(sample.image)
            collector.add(sample.caption, meta.get("url"), width, height,
                          _int(meta.get("original_width")), _int(meta.get("original_height")))
    total_bytes = sum(shards.size(p) for p in shards.paths)
    return {
        "shards_spec": shards.spec,
        "source": source,
        "shards": len(shards),
        "samples": collector.samples,
        "bytes": total_bytes,
        "distributions": {name: describe(values) for name, values in collector.columns.items()},
        "top_domains": collector.domains.most_common(TOP_N),
        "top_words": collector.words.most_common(TOP_N),
    }


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _header_size(data: bytes) -> tuple[int | None, int | None]:
    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only
            return img.size
    except Exception:  # undecodable images are validate's business, not summary's
        return None, None


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def format_summary(result: dict) -> str:
    lines = [
        f"shards   {result['shards']}",
        f"samples  {result['samples']}",
        f"bytes    {result['bytes']} ({human_bytes(result['bytes'])})",
        f"source   {'per-shard parquet files' if result['source'] == 'parquet' else 'tar contents'}",
        "",
        f"{'':18s}" + "".join(f"{h:>9s}" for h in ("count", "min", "p5", "p25", "median", "p75", "p95", "max",
                                                    "mean")),
    ]
    for name, d in result["distributions"].items():
        cells = [d["count"]] + [d[k] for k in ("min", "p5", "p25", "median", "p75", "p95", "max", "mean")]
        lines.append(f"{name:18s}" + "".join(f"{'-' if c is None else c:>9}" for c in cells))
    lines.append("")
    lines.append("top domains: " + (", ".join(f"{d} ({n})" for d, n in result["top_domains"]) or "-"))
    lines.append("top words:   " + (", ".join(f"{w} ({n})" for w, n in result["top_words"]) or "-"))
    return "\n".join(lines)


def to_json(result: dict) -> str:
    return json.dumps(result, indent=2, ensure_ascii=False)

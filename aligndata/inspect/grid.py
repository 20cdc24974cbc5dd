"""`inspect grid`: a PNG contact sheet of sample thumbnails with their captions wrapped underneath.

Samples are a uniform random choice over the whole set (reservoir sampling, one pass, ``--seed`` makes it
repeatable), shown in shard order. Images that do not decode get a marked placeholder rather than stopping
the sheet: they are exactly what one wants to see.
"""

from __future__ import annotations

import io
import math
import random
import warnings

from PIL import Image, ImageDraw, ImageFont

from aligndata.shards.reader import Sample
from aligndata.inspect.scan import scan
from aligndata.shards.spec import ShardSet
from aligndata.filters.image import DEFAULT_MAX_PIXELS as MAX_PIXELS  # the curate default

BACKGROUND = (255, 255, 255)
CELL_BACKGROUND = (236, 236, 236)
TEXT = (30, 30, 30)
MUTED = (170, 40, 40)


def choose(shards: ShardSet, n: int, seed: int) -> list[Sample]:
    """``n`` samples drawn uniformly (Algorithm R), returned in (shard, position) order."""
    rng = random.Random(seed)
    chosen: list[tuple[int, Sample]] = []
    for seen, sample in enumerate(scan(shards)):
        if len(chosen) < n:
            chosen.append((seen, sample))
        else:
            j = rng.randrange(seen + 1)
            if j < n:
                chosen[j] = (seen, sample)
    return [sample for _, sample in sorted(chosen, key=lambda pair: pair[0])]


def thumbnail(data: bytes | None, size: int) -> Image.Image | None:
    """An RGB thumbnail fitting size x size, or None when the bytes are not a decodable image."""
    if not data:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if img.width * img.height > MAX_PIXELS:
                    return None
                img.draft("RGB", (size, size))  # JPEG: decode at reduced scale, much faster
                rgb = img.convert("RGB")
        rgb.thumbnail((size, size), Image.Resampling.LANCZOS)
        return rgb
    except Exception:  # undecodable: the caller draws a placeholder
        return None


def wrap(text: str, font, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap by rendered width; long words are cut; the last line ends with "…" when text is left."""
    words = text.split()
    lines: list[str] = []
    line = ""
    for word in words:
        candidate = f"{line} {word}" if line else word
        if font.getlength(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        while font.getlength(word) > width:  # a word wider than the cell: split it
            cut = max(1, _fit(word, font, width))
            lines.append(word[:cut])
            word = word[cut:]
        line = word
    if line:
        lines.append(line)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and font.getlength(last + "…") > width:
            last = last[:-1]
        lines = lines[: max_lines - 1] + [last + "…"]
    return lines


def _fit(word: str, font, width: int) -> int:
    lo, hi = 0, len(word)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if font.getlength(word[:mid]) <= width:
            lo = mid
        else:
            hi = mid - 1
    return lo


def contact_sheet(samples: list[Sample], thumb: int = 160, caption_lines: int = 4,
                  columns: int | None = None) -> Image.Image:
    font = ImageFont.load_default(size=12)
    line_height = 15
    pad = 8
    columns = columns or max(1, min(8, math.ceil(math.sqrt(max(1, len(samples))))))
    rows = max(1, math.ceil(len(samples) / columns))
    cell_w = thumb + 2 * pad
    cell_h = thumb + 2 * pad + caption_lines * line_height + pad
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    if not samples:
        draw.text((pad, pad), "no samples", fill=TEXT, font=font)
    for i, sample in enumerate(samples):
        x0, y0 = (i % columns) * cell_w + pad, (i // columns) * cell_h + pad
        draw.rectangle([x0, y0, x0 + thumb - 1, y0 + thumb - 1], fill=CELL_BACKGROUND)
        img = thumbnail(sample.image, thumb)
        if img is None:
            draw.line([x0, y0, x0 + thumb - 1, y0 + thumb - 1], fill=MUTED, width=2)
            draw.line([x0, y0 + thumb - 1, x0 + thumb - 1, y0], fill=MUTED, width=2)
            draw.text((x0 + 6, y0 + 6), "no image" if sample.image is None else "undecodable", fill=MUTED, font=font)
        else:
            sheet.paste(img, (x0 + (thumb - img.width) // 2, y0 + (thumb - img.height) // 2))
        caption = _clean(sample.caption or "(no caption)")
        for j, line in enumerate(wrap(caption, font, thumb, caption_lines)):
            draw.text((x0, y0 + thumb + 4 + j * line_height), line, fill=TEXT, font=font)
    return sheet


def _clean(text: str) -> str:
    return "".join(ch if ch.isprintable() else " " for ch in text)


def grid_png(shards: ShardSet, n: int, seed: int, thumb: int = 160) -> bytes:
    sheet = contact_sheet(choose(shards, n, seed), thumb=thumb)
    out = io.BytesIO()
    sheet.save(out, "PNG", optimize=True)
    return out.getvalue()

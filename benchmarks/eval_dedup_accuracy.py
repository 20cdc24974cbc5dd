"""Eval-set dedup accuracy: recall on transformed copies and false positives on unrelated real photos.

    .venv/bin/python benchmarks/eval_dedup_accuracy.py [--kinds phash,dhash,ahash,whash] [--max-t 16]

Eval set: the 159 real COCO val2017 photos in ../shared/data/real/photos, each hashed as is and mirrored
(what `aligndata eval-index build` stores). Queries are hashed the way the pipeline hashes a fetched image:
the copy is JPEG-encoded (quality 95, as a web copy would be), decoded by `decode_image` with the pipeline's
JPEG draft size (346 px), then hashed.

Recall: for each photo and each transform (half-size downscale, JPEG quality 30, 5% border crop on every side,
horizontal flip, brightness +-10%), is the copy within T of ITS OWN eval photo (orig or mirror entry)?

False positives: only 159 real photos exist here, so every photo is a query against the other 158 as the eval
set (leave-one-out): 159 x 158 = 25,122 ordered (query, eval image) pairs. A pair is a false positive when the
query is within T of the eval image or of its mirror, as the pipeline would judge. Reported per pair
(resolution 1/25,122 = 0.004%) and per query (is the query within T of ANY of the other 158 photos;
resolution 1/159 = 0.63%). Where nothing is observed, the 95% upper bound is 3/n (rule of three). A real eval
set has ~200k images, so a per-query rate at that scale is extrapolated from the per-pair rate:
1 - (1 - p_pair)^200k, with p_pair from a beta-binomial fitted to the unrelated-pair distance histogram (the
empirical tail is too short to measure 1e-9 directly); it is labelled as an extrapolation.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import time

import numpy as np
from common import REAL, emit
from PIL import Image, ImageEnhance, ImageOps
from scipy import special

from aligndata.filters.dedup import HASH_KINDS, HashSpec
from aligndata.filters.image import decode_image

PIPELINE_DRAFT = (346, 346)  # ImageConfig().draft_size(): what the pipeline decodes JPEGs at before hashing
SCALE_EVAL_IMAGES = 200_000


def _crop_border(img: Image.Image, fraction: float = 0.05) -> Image.Image:
    w, h = img.size
    dx, dy = round(w * fraction), round(h * fraction)
    return img.crop((dx, dy, w - dx, h - dy))


def jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


# name -> (transform, quality of the JPEG the pipeline then downloads)
TRANSFORMS = {
    "downscale_half": (lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.BICUBIC), 95),
    "jpeg_q30": (lambda im: im, 30),
    "crop_5pct": (_crop_border, 95),
    "hflip": (ImageOps.mirror, 95),
    "brightness_+10pct": (lambda im: ImageEnhance.Brightness(im).enhance(1.10), 95),
    "brightness_-10pct": (lambda im: ImageEnhance.Brightness(im).enhance(0.90), 95),
}


def pipeline_view(img: Image.Image, quality: int) -> Image.Image:
    return decode_image(jpeg(img, quality), draft_size=PIPELINE_DRAFT).image


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All-pairs Hamming distances of uint64 vectors a (n,) and b (m,) -> (n, m)."""
    return np.bitwise_count(a[:, None] ^ b[None, :]).astype(np.int64)


def fit_beta_binomial(d: np.ndarray, bits: int) -> tuple[float, float]:
    """Method-of-moments beta-binomial fit to unrelated-pair distances (overdispersed vs a plain binomial)."""
    mean, var = d.mean(), d.var()
    p = mean / bits
    rho = max((var / (bits * p * (1 - p)) - 1) / (bits - 1), 1e-9)  # intra-class correlation
    total = 1 / rho - 1
    return p * total, (1 - p) * total


def beta_binomial_cdf(t: int, bits: int, a: float, b: float) -> float:
    k = np.arange(t + 1)
    log_pmf = (special.gammaln(bits + 1) - special.gammaln(k + 1) - special.gammaln(bits - k + 1)
               + special.betaln(k + a, bits - k + b) - special.betaln(a, b))
    return float(np.exp(log_pmf).sum())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default=",".join(HASH_KINDS))
    parser.add_argument("--max-t", type=int, default=16)
    args = parser.parse_args()
    photos = sorted((REAL / "photos" / "coco_val2017").glob("*.jpg"))
    if not photos:
        sys.exit(f"benchmark needs the COCO photos in {REAL / 'photos' / 'coco_val2017'}")
    started = time.perf_counter()
    originals = [decode_image(p.read_bytes()).image for p in photos]  # the eval images, fully decoded
    views = {name: [pipeline_view(fn(im), q) for im in originals] for name, (fn, q) in TRANSFORMS.items()}
    n = len(originals)
    thresholds = list(range(0, args.max_t + 1))
    tables = {}
    for kind in args.kinds.split(","):
        spec = HashSpec(kind, 8)
        pairs = [spec.hash_with_mirror(im) for im in originals]
        ev = np.array([p[0] for p in pairs], dtype=np.uint64)
        ev_mirror = np.array([p[1] for p in pairs], dtype=np.uint64)
        # recall: distance of each transformed copy to its own photo (nearest of orig / mirror entry)
        own = {}
        for name, imgs in views.items():
            q = np.array([spec.hash_image(im) for im in imgs], dtype=np.uint64)
            own[name] = np.minimum(np.bitwise_count(q ^ ev), np.bitwise_count(q ^ ev_mirror)).astype(np.int64)
        # false positives: each photo (as the pipeline would see an unmodified copy) vs every other photo
        q = np.array([spec.hash_image(pipeline_view(im, 95)) for im in originals], dtype=np.uint64)
        pair_d = np.minimum(distances(q, ev), distances(q, ev_mirror))
        off_diag = ~np.eye(n, dtype=bool)
        unrelated = pair_d[off_diag]
        nearest_other = np.where(off_diag, pair_d, 10**6).min(axis=1)
        a, b = fit_beta_binomial(distances(ev, ev)[off_diag], 64)
        rows = []
        for t in thresholds:
            fp_pairs = int((unrelated <= t).sum())
            fp_queries = int((nearest_other <= t).sum())
            # two entries (orig + mirror) per eval image, treated as independent draws
            p_pair_model = min(1.0, 2 * beta_binomial_cdf(t, 64, a, b))
            rows.append({
                "T": t,
                "recall": {name: float((d <= t).mean()) for name, d in own.items()},
                "fp_pairs": fp_pairs,
                "fp_pair_rate": fp_pairs / len(unrelated),
                "fp_pair_rate_upper95": 3 / len(unrelated) if fp_pairs == 0 else None,
                "fp_queries": fp_queries,
                "fp_query_rate": fp_queries / n,
                "model_fp_pair_rate": p_pair_model,
                "model_fp_query_rate_at_200k": -math.expm1(SCALE_EVAL_IMAGES * math.log1p(-p_pair_model))
                if p_pair_model < 1 else 1.0,
            })
        tables[kind] = {
            "unrelated_distance_min": int(unrelated.min()),
            "unrelated_distance_mean": float(unrelated.mean()),
            "unrelated_distance_percentiles": {str(p): float(np.percentile(unrelated, p)) for p in (0.1, 1, 5, 50)},
            "beta_binomial": [a, b],
            "own_distance_max": {name: int(d.max()) for name, d in own.items()},
            "rows": rows,
        }
        print_table(kind, tables[kind])
    emit("eval_dedup_accuracy", {
        "photos": n, "unrelated_pairs": n * (n - 1), "transforms": list(TRANSFORMS),
        "seconds": round(time.perf_counter() - started, 1), "tables": tables,
    })
    return 0


def print_table(kind: str, table: dict) -> None:
    names = list(TRANSFORMS)
    print(f"\n## {kind} (64 bits): unrelated-pair distance min {table['unrelated_distance_min']}, "
          f"mean {table['unrelated_distance_mean']:.1f}; worst own-copy distance {table['own_distance_max']}")
    print("| T | " + " | ".join(names) + " | FP pairs (rate) | FP queries (rate) | model FP/query @200k |")
    print("|---:|" + "---:|" * len(names) + "---:|---:|---:|")
    for row in table["rows"]:
        recall = " | ".join(f"{row['recall'][nm]:.3f}" for nm in names)
        print(f"| {row['T']} | {recall} | {row['fp_pairs']} ({100 * row['fp_pair_rate']:.3f}%) | "
              f"{row['fp_queries']} ({100 * row['fp_query_rate']:.2f}%) | "
              f"{100 * row['model_fp_query_rate_at_200k']:.3g}% |")


if __name__ == "__main__":
    sys.exit(main())

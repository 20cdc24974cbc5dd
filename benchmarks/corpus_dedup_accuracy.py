"""``aligndata dedup`` accuracy on real photos: recall of transformed copies, false positives between unrelated
photos, with docs/dedup.md's transformed-copy method, through the real job.

    .venv/bin/python benchmarks/corpus_dedup_accuracy.py [--max-t 16]

Corpus: the 159 real COCO val2017 photos in ../shared/data/real/photos, plus for each photo an exact copy (the
same bytes) and the transformed copies of docs/dedup.md (half-size bicubic downscale, JPEG quality 30, 5% cropped
off every side, horizontal flip, brightness +-10%; each saved as JPEG quality 95 but the q30 one). Every sample
goes through curate's own per-image chain (``process_image``: the pipeline's decode with its 346 px JPEG draft,
the pHash of the decoded image, the sha256 of the bytes) into shards written by the real writer, and ``aligndata
dedup`` runs on them (FnApiRunner) once per T.

Recall: is a copy in its original's group? False positives: pairs of *different* photos in one group (transitive
groups included), of the n * (n - 1) / 2 unrelated pairs of the photos curate keeps (a photo whose shorter side is
<= 200 px is rejected by ALIGN's size rule, as it would be in a real run); and photos grouped with any other.
Corpus dedup compares every sample with every other, so the rate that matters grows with the corpus: from a
beta-binomial fitted to the unrelated-pair distances (docs/dedup.md's model; there the observed tail was 1.6-3.3x
heavier than the model, so read these as optimistic by a few times), the expected fraction of samples that have
at least one false partner among N others, 1 - (1 - p_pair)**N, at N = 1M, 100M and 1B.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import REAL, emit
from eval_dedup_accuracy import TRANSFORMS, beta_binomial_cdf, fit_beta_binomial, jpeg
from PIL import Image

from aligndata.images.process import ImageConfig, process_image
from aligndata.pipeline.dedup_job import DedupConfig
from aligndata.pipeline.dedup_run import run_dedup
from aligndata.shards.duplicates import read_duplicates
from aligndata.shards.writer import Sample, write_shard

CORPUS_SIZES = (1_000_000, 100_000_000, 1_000_000_000)


def make_sample(data: bytes, caption: str, url: str, cfg: ImageConfig) -> Sample | None:
    outcome = process_image(data, cfg)
    if outcome.reason is not None:
        return None
    uid = hashlib.sha256(f"{url}\t{caption}".encode()).hexdigest()[:32]
    meta = {"key": uid, "uid": uid, "url": url, "caption": caption, "width": outcome.width, "height": outcome.height,
            "original_width": outcome.original_width, "original_height": outcome.original_height,
            "sha256": outcome.sha256, "phash": outcome.phash}
    return Sample(uid, outcome.image_bytes, outcome.ext, caption, meta)


def build_corpus(photos: list[Path], directory: Path) -> tuple[dict, dict]:
    """Shards of originals and copies; returns ({uid: (photo, role)}, {photo: original pHash})."""
    cfg = ImageConfig()
    samples, roles, hashes = [], {}, {}
    for n, path in enumerate(photos):
        data = path.read_bytes()
        image = Image.open(io.BytesIO(data)).convert("RGB")
        copies = {"original": data, "exact": data}
        copies.update({name: jpeg(fn(image), q) for name, (fn, q) in TRANSFORMS.items()})
        for role, payload in copies.items():
            sample = make_sample(payload, f"{role} of photo {n}", f"http://accuracy.test/{role}/{path.name}", cfg)
            if sample is None:
                continue
            samples.append(sample)
            roles[sample.key] = (n, role)
            if role == "original":
                hashes[n] = int(sample.meta["phash"], 16)
    for index in range(4):
        write_shard(str(directory), index, samples[index::4])
    return roles, hashes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-t", type=int, default=16)
    args = parser.parse_args()
    photos = sorted((REAL / "photos" / "coco_val2017").glob("*.jpg"))
    if not photos:
        sys.exit(f"benchmark needs the COCO photos in {REAL / 'photos' / 'coco_val2017'}")
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        shards = Path(tmp) / "shards"
        roles, hashes = build_corpus(photos, shards)
        # a photo curate itself would reject (shorter side <= 200 px, aspect >= 3) is left out with its copies
        roles = {uid: (photo, role) for uid, (photo, role) in roles.items() if photo in hashes}
        n = len(hashes)
        originals = np.array(list(hashes.values()), dtype=np.uint64)
        unrelated = np.bitwise_count(originals[:, None] ^ originals[None, :])[np.triu_indices(n, 1)].astype(np.int64)
        a, b = fit_beta_binomial(unrelated, 64)
        for t in range(0, args.max_t + 1, 2):  # pHash distances are even
            out = Path(tmp) / f"T{t}"
            summary = run_dedup(DedupConfig(shards=str(shards), output=str(out), hamming=t, overwrite=True))
            group = dict(zip(read_duplicates(str(out)).column("uid").to_pylist(),
                             read_duplicates(str(out)).column("group").to_pylist()))
            first = {photo: group.get(uid) for uid, (photo, role) in roles.items() if role == "original"}
            recall = {}
            for role in ["exact", *TRANSFORMS]:
                copies = [(uid, photo) for uid, (photo, r) in roles.items() if r == role]
                recall[role] = sum(group.get(uid) is not None and group.get(uid) == first[photo]
                                   for uid, photo in copies) / len(copies)
            by_group: dict[int, set] = {}
            for uid, (photo, _) in roles.items():
                if uid in group:
                    by_group.setdefault(group[uid], set()).add(photo)
            fp_pairs = sum(len(p) * (len(p) - 1) // 2 for p in by_group.values())
            fp_photos = sum(len(p) for p in by_group.values() if len(p) > 1)
            p_pair = min(1.0, beta_binomial_cdf(t, 64, a, b))
            rows.append({
                "T": t, "recall": recall, "fp_pairs": fp_pairs, "unrelated_pairs": n * (n - 1) // 2,
                "fp_photos": fp_photos, "photos": n, "largest_group_photos": max(map(len, by_group.values()), default=0),
                "model_fp_pair_rate": p_pair,
                "model_fp_sample_rate": {str(size): -math.expm1(size * math.log1p(-p_pair)) if p_pair < 1 else 1.0
                                         for size in CORPUS_SIZES},
                "job_seconds": summary["seconds"], "groups": summary["groups"],
            })
            print(t, {k: v for k, v in rows[-1].items() if k != "model_fp_sample_rate"}, flush=True)
    print_table(rows, n)
    emit("corpus_dedup_accuracy", {"photos": len(photos), "photos_curate_keeps": n, "samples": len(roles), "transforms": ["exact", *TRANSFORMS],
                                   "beta_binomial": [a, b], "unrelated_distance_min": int(unrelated.min()),
                                   "rows": rows, "seconds": round(time.perf_counter() - started, 1)})
    return 0


def _percent(rate: float) -> str:
    pct = 100 * rate
    return f"{pct:.0f}%" if pct >= 10 else f"{pct:.2g}%"


def print_table(rows: list[dict], photos: int) -> None:
    names = list(rows[0]["recall"])
    print("| T | " + " | ".join(names) + f" | FP pairs /{photos * (photos - 1) // 2:,} | FP photos /{photos} "
          "| modelled FP per sample at 1M / 100M / 1B |")
    print("|---:|" + "---:|" * (len(names) + 3))
    for r in rows:
        model = " / ".join(_percent(r["model_fp_sample_rate"][str(s)]) for s in CORPUS_SIZES)
        print(f"| {r['T']} | " + " | ".join(f"{r['recall'][k]:.3f}" for k in names)
              + f" | {r['fp_pairs']} | {r['fp_photos']} | {model} |")


if __name__ == "__main__":
    sys.exit(main())

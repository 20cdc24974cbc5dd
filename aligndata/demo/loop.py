"""`aligndata demo --loop`: the closed loop. The model trained on the rule-curated shards scores the unfiltered
corpus and the curated one; each is cut to its top fraction by score, and the demo trains on both cuts with the
same steps as the first two runs.

Four runs, one held-out set: unfiltered (no filter), rules only (curated), score only (the top of the unfiltered
corpus), rules + score (the top of the curated corpus). The scores and subsets are written with the product's own
`aligndata score` and `aligndata subset` code, so what the demo measures is what a user gets from those commands.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from fractions import Fraction
from pathlib import Path

# run name -> (label, the corpus its training data came from, cut by score or not)
LOOP_RUNS = {
    "unfiltered": ("unfiltered", "unfiltered", False),
    "curated": ("rules only", "curated", False),
    "score-only": ("score only", "unfiltered", True),
    "rules-and-score": ("rules + score", "curated", True),
}


def shard_samples(shards: str) -> int:
    """The samples of a shard directory, from its sizes.json (curate and subset both write one)."""
    with open(os.path.join(shards, "sizes.json"), encoding="utf-8") as handle:
        return sum(json.load(handle).values())


def training_mix(shards: str) -> dict:
    """What a training set holds by the web's hidden ground truth: clean samples, noise samples, and each kind
    (the ``kind`` column curate carried into every shard's parquet, and subset copied)."""
    import pyarrow.parquet as pq

    from aligndata.demo.web import CLEAN
    from aligndata.shards.outcomes import success_rows

    kinds: Counter = Counter()
    for path in sorted(Path(shards).glob("[0-9]*.parquet")):
        if not path.name.endswith("_scores.parquet"):
            table = success_rows(pq.read_table(path))
            kinds.update(table.column("kind").to_pylist())
    return {"clean": kinds[CLEAN], "noise": sum(n for kind, n in kinds.items() if kind != CLEAN),
            "by_kind": dict(kinds.most_common())}


def rules_share(curated: str, unfiltered: str) -> str:
    """The share of the unfiltered corpus the rules kept, as an exact fraction "kept/all": cut to it, the score-only
    run trains on exactly as many samples as the rules-only run, so the two filters compare at equal size."""
    kept, everything = shard_samples(curated), shard_samples(unfiltered)
    if not everything:
        raise ValueError(f"{unfiltered} holds no sample")
    return f"{kept}/{everything}"


def score_and_cut(model: str, source: str, scores_dir: Path, subset_dir: Path, fraction: str,
                  progress: bool) -> dict:
    """Score every sample of ``source`` with ``model`` (scores written to ``scores_dir``) and write its top
    ``fraction`` by score to ``subset_dir``; return what was scored and kept."""
    from aligndata.models.score import ScoreConfig, score
    from aligndata.shards.spec import resolve
    from aligndata.subsets.run import run_subset
    from aligndata.subsets.select import Request, input_digits

    # workers=0: the demo's images are small and few, so decoding in this process beats starting workers
    scored = score(ScoreConfig(shards=source, model=model, output=str(scores_dir), device="cpu", workers=0,
                               progress=progress))
    shards = resolve(source)
    request = Request(spec=source, paths=tuple(shards.paths), output=str(subset_dir), scores_dir=str(scores_dir),
                      top_fraction=fraction, samples_per_shard=500, shard_digits=input_digits(shards))
    summary = run_subset(request, processes=1, quiet=not progress)
    top = summary["top_fraction"]
    return {"source": source, "scores": str(scores_dir), "subset": str(subset_dir), "model": scored["model"],
            "samples": scored["samples"], "scored": scored["scored"], "unscored": scored["failed"],
            "fraction": fraction, "kept": summary["kept"], "k": top["k"], "of": top["of"],
            "lowest_score_kept": top.get("lowest_score_kept"), "score_seconds": scored["seconds"]}


def fraction_value(fraction: str) -> float:
    return float(Fraction(fraction))

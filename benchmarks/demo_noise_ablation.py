"""Which noise costs the unfiltered demo run most: the clean rows plus one noise group, same steps and settings.

    .venv/bin/aligndata demo --output demo_output --compare --overwrite --quiet      # the web, both corpora
    .venv/bin/python benchmarks/demo_noise_ablation.py --demo demo_output

Each corpus is cut from the demo's unfiltered shards by the hidden ground truth (`kind` in each sample's .json)
and trained exactly as the demo trains (tiny preset, same steps, seed and image cache), then evaluated on the
held-out set and on its leak-free part. One seed: a different sample set also reorders training, so differences of
a few points are run-to-run variation.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from common import emit

from aligndata.demo.run import DemoConfig, _evaluate_unleaked, _train_and_evaluate
from aligndata.shards.reader import iter_shards
from aligndata.shards.spec import resolve
from aligndata.shards.writer import Sample, write_shard, write_sizes

GROUPS = {
    "clean only": set(),
    "+ placeholder under 150 captions": {"many_captions"},
    "+ text noise (short, long, boilerplate, junk, shared, NSFW)": {
        "too_short", "too_long", "boilerplate", "junk_tokens", "shared_caption", "nsfw_caption"},
    "+ icons and banners": {"small_image", "banner"},
    "+ eval near-duplicates": {"eval_near_duplicate"},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--demo", required=True, help="output directory of `aligndata demo --compare`")
    parser.add_argument("--train-steps", type=int, default=DemoConfig.train_steps)
    args = parser.parse_args()
    demo = Path(args.demo)
    samples = [(s.meta, s) for s in iter_shards(resolve(str(demo / "unfiltered")).paths)]
    results = {}
    with tempfile.TemporaryDirectory(prefix="aligndata-ablation-") as tmp:
        for i, (name, kinds) in enumerate(GROUPS.items()):
            keep = [Sample(key=s.key, image=s.files["jpg"], image_ext="jpg", text=meta["caption"], meta=meta)
                    for meta, s in samples if meta["kind"] == "clean" or meta["kind"] in kinds]
            shards = Path(tmp) / f"data-{i}"
            shards.mkdir()
            stats = write_shard(str(shards), 0, keep)
            write_sizes(str(shards), {f"{stats['shard']}.tar": stats["count"]})
            summary = _train_and_evaluate(DemoConfig(train_steps=args.train_steps, quiet=True), str(shards),
                                          Path(tmp) / f"run-{i}", str(demo / "eval" / "shards"),
                                          str(demo / "eval" / "classnames.txt"))
            retrieval = summary["val"]["retrieval"]
            unleaked = _evaluate_unleaked(summary["final"], str(demo / "eval" / "shards-unleaked"))
            results[name] = {
                "samples": len(keep),
                "image_to_text_R@1": round(retrieval["image_to_text_R@1"], 1),
                "text_to_image_R@1": round(retrieval["text_to_image_R@1"], 1),
                "zeroshot_top1": round(summary["val"]["zeroshot"]["top1"], 1),
                "unleaked": {k: round(unleaked[k], 1) for k in ("image_to_text_R@1", "text_to_image_R@1",
                                                                "zeroshot_top1")},
            }
            shutil.rmtree(shards)
    emit("demo_noise_ablation", {"demo": str(demo), "train_steps": args.train_steps, "runs": results})


if __name__ == "__main__":
    main()

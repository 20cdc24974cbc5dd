"""`aligndata demo --unicl`: does image-label data help, UniCL's way? Three runs with the same steps, batch,
learning rate and seed, evaluated on the same held-out images:

- ``align``: the ALIGN loss on the curated image-text shards (the demo's usual run);
- ``unicl-mix``: the UniCL loss on the curated shards mixed 1:1 (``--data-weights``) with an image-label set;
- ``unicl-labels``: the UniCL loss on the image-label set alone.

The image-label set is made from *other* scenes of the demo world (not in the web, not held out), drawn at web
sizes and written as real JPEG files in torchvision's ImageFolder layout (``labelled-images/CLASS/N.jpg``, CLASS =
"colour shape", the 36 zero-shot classes), then turned into shards by `aligndata shards-from-labels`' own code, so
the demo measures what a user gets from that command and `aligndata train --data A --data B`.
"""

from __future__ import annotations

import random
from pathlib import Path

from aligndata.demo.web import jpeg
from aligndata.demo.world import draw, random_size, sample_scene

# run name -> (label in the tables, loss, which data: "curated", "labels" or both)
UNICL_RUNS = {
    "align": ("ALIGN, image-text", "align", ("curated",)),
    "unicl-mix": ("UniCL, image-text + image-label", "unicl", ("curated", "labels")),
    "unicl-labels": ("UniCL, image-label only", "unicl", ("labels",)),
}
MIX_WEIGHTS = [0.5, 0.5]  # curated : labelled, per batch


def write_label_images(root: Path, images: int, seed: int) -> dict:
    """``images`` scenes of the world, drawn from their own seed (none is a web or held-out scene), as
    ROOT/CLASS/NNNNN.jpg; returns the count per class."""
    rng = random.Random(f"demo-labelled-images:{seed}")
    counts: dict[str, int] = {}
    for i in range(images):
        scene = sample_scene(rng)
        width, height = random_size(rng)
        folder = root / scene.label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:05d}.jpg").write_bytes(jpeg(draw(scene, width, height)))
        counts[scene.label] = counts.get(scene.label, 0) + 1
    return dict(sorted(counts.items()))


def make_label_set(out: Path, images: int, seed: int) -> dict:
    """The image-label shards (OUT/labelled) from the image files (OUT/labelled-images); what was written."""
    from aligndata.labelled.write import LabelsConfig, shards_from_labels

    root = out / "labelled-images"
    per_class = write_label_images(root, images, seed)
    report = shards_from_labels(LabelsConfig(output=str(out / "labelled"), images=str(root), samples_per_shard=500))
    return {"images": str(root), "shards": str(out / "labelled"), "files": images, "kept": report["kept"],
            "rejected": report["rejected"], "classes": report["classes"], "per_class_min": min(per_class.values()),
            "per_class_max": max(per_class.values())}


def arm_data(name: str, curated: str, labelled: str) -> tuple[list[str], list[float] | None]:
    sets = {"curated": curated, "labels": labelled}
    chosen = [sets[which] for which in UNICL_RUNS[name][2]]
    return chosen, (MIX_WEIGHTS if len(chosen) > 1 else None)


def arm_summary(summary: dict, sets: list[str]) -> dict:
    from aligndata.demo.loop import shard_samples

    val = summary.get("val", {})
    return {
        "data": sets,
        "train_samples": sum(shard_samples(one) for one in sets),
        "final_loss": summary.get("loss"),
        "retrieval": {k: v for k, v in val.get("retrieval", {}).items() if isinstance(v, (int, float))},
        "zeroshot_top1": val.get("zeroshot", {}).get("top1", 0.0),
        "zeroshot_top5": val.get("zeroshot", {}).get("top5", 0.0),
        "knn_top1": val.get("knn", {}).get("top1", 0.0),
        "model": summary.get("final"),
    }


def print_unicl(result: dict, stream) -> None:
    facts = result["unicl"]
    print(f"\nimage-label set: {facts['label_set']['kept']} images of {facts['label_set']['classes']} classes; "
          f"mix {facts['mix_weights'][0]:g}:{facts['mix_weights'][1]:g} curated:labelled per batch", file=stream)
    print("held-out set, in %: R@1 both ways, zero-shot top-1 (36 classes), k-NN top-1 (k = 5, leave-one-out); "
          "leak-free = on the held-out images with no near-duplicate in the web", file=stream)
    print(f"{'run':32s} {'samples':>7s} {'i->t':>6s} {'t->i':>6s} {'zero-shot':>9s} {'k-NN':>6s} "
          f"{'leak-free i->t/t->i/zs':>23s} {'loss':>5s}", file=stream)
    for name, run in result["runs"].items():
        r, u = run["retrieval"], run["unleaked"]
        leak_free = f"{u['image_to_text_R@1'] or 0:.1f}/{u['text_to_image_R@1'] or 0:.1f}/{u['zeroshot_top1'] or 0:.1f}"
        print(f"{UNICL_RUNS[name][0]:32s} {run['train_samples']:7d} {r.get('image_to_text_R@1', 0):6.1f} "
              f"{r.get('text_to_image_R@1', 0):6.1f} {run['zeroshot_top1']:9.1f} {run['knn_top1']:6.1f} "
              f"{leak_free:>23s} {run['final_loss']:5.2f}", file=stream)
    chance = result["chance"]
    print(f"{'chance':32s} {'':7s} {chance['retrieval_R@1']:6.1f} {chance['retrieval_R@1']:6.1f} "
          f"{chance['zeroshot']:9.1f} {chance['zeroshot']:6.1f}", file=stream)

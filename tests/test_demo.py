"""A reduced `aligndata demo`: synthetic noisy web -> curate -> train -> evaluate -> report, end to end."""

import json
import math
from pathlib import Path

import pytest

from aligndata.cli import main
from aligndata.demo.run import learning_curve
from aligndata.demo.web import CLEAN, build_web


def assert_recall(value, queries: int) -> None:
    """A recall in percent over ``queries`` queries: a whole number of hits between 0 and all of them."""
    hits = value * queries / 100
    assert 0 <= hits <= queries and abs(hits - round(hits)) < 1e-3, (value, queries)


def test_synthetic_web_is_labelled_and_deterministic():
    a, b = build_web(300, 20, seed=5), build_web(300, 20, seed=5)
    assert [r["caption"] for r in a.rows] == [r["caption"] for r in b.rows]
    assert a.files.keys() == b.files.keys()
    kinds = {r["kind"] for r in a.rows}
    assert CLEAN in kinds and {"junk_tokens", "shared_caption", "many_captions", "eval_near_duplicate",
                               "nsfw_caption", "banner", "small_image", "dead_url", "broken_file"} <= kinds
    assert len(a.eval_set) == 20


@pytest.mark.e2e
def test_reduced_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--output", str(out), "--pairs", "500", "--eval-size", "40", "--train-steps", "40",
                 "--batch-size", "16", "--compare", "--quiet"]) == 0
    result = json.loads((out / "demo.json").read_text())
    filters = result["filters"]
    # the rules catch the noise the web was made with, and little else
    assert filters["recall"] >= 0.9 and filters["precision"] >= 0.8
    for kind in ("too_short", "too_long", "shared_caption", "banner", "small_image", "dead_url", "broken_file"):
        assert filters["per_kind"][kind]["rejected"] == filters["per_kind"][kind]["rows"], kind
    assert set(result["runs"]) == {"curated", "unfiltered"}
    for run in result["runs"].values():
        # 40 steps are too few to beat chance at R@1 (measured 2.5% = chance): check the numbers are real recalls
        # and that training happened (the loss falls from its first steps; measured 6.7-7.0 -> 4.9-5.4)
        retrieval = run["retrieval"]
        assert retrieval["images"] == retrieval["texts"] == 40
        for direction in ("image_to_text", "text_to_image"):
            recalls = [retrieval[f"{direction}_R@{k}"] for k in (1, 5, 10)]
            for value in recalls:
                assert_recall(value, 40)
            assert recalls == sorted(recalls), (direction, recalls)  # R@1 <= R@5 <= R@10
        curve = learning_curve(Path(run["model"]).parent)
        assert [step for step, _ in curve] == list(range(1, 41))
        assert math.isfinite(run["final_loss"]) and run["final_loss"] == curve[-1][1]
        assert run["final_loss"] < sum(loss for _, loss in curve[:5]) / 5
        assert Path(run["model"]).is_dir()  # RUN/final, a save_pretrained directory
        # also scored on the held-out images that did not leak into the web as near-duplicates
        unleaked = run["unleaked"]
        assert 0 < unleaked["images"] < 40
        assert_recall(unleaked["image_to_text_R@1"], unleaked["images"])
    page = (out / "curated" / "report.html").read_text()
    assert "Demo: did curation matter?" in page and "<polyline" in page  # the learning curves
    assert result["runs"]["curated"]["train_samples"] < result["runs"]["unfiltered"]["train_samples"]

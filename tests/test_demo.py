"""A reduced `aligndata demo`: synthetic noisy web -> curate -> train -> evaluate -> report, end to end."""

import json
from pathlib import Path

from aligndata.cli import main
from aligndata.demo.web import CLEAN, build_web


def test_synthetic_web_is_labelled_and_deterministic():
    a, b = build_web(300, 20, seed=5), build_web(300, 20, seed=5)
    assert [r["caption"] for r in a.rows] == [r["caption"] for r in b.rows]
    assert a.files.keys() == b.files.keys()
    kinds = {r["kind"] for r in a.rows}
    assert CLEAN in kinds and {"junk_tokens", "shared_caption", "many_captions", "eval_near_duplicate",
                               "nsfw_caption", "banner", "small_image", "dead_url", "broken_file"} <= kinds
    assert len(a.eval_set) == 20


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
        assert run["final_loss"] is not None and run["retrieval"]["image_to_text_R@1"] >= 0
        assert Path(run["model"]).is_dir()  # RUN/final, a save_pretrained directory
        # also scored on the held-out images that did not leak into the web as near-duplicates
        assert 0 < run["unleaked"]["images"] < 40 and run["unleaked"]["image_to_text_R@1"] is not None
    page = (out / "curated" / "report.html").read_text()
    assert "Demo: did curation matter?" in page and "<polyline" in page  # the learning curves
    assert result["runs"]["curated"]["train_samples"] < result["runs"]["unfiltered"]["train_samples"]

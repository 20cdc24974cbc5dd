"""curate with an eval-set index and NSFW filtering, end to end against a local server."""

from __future__ import annotations

import io

import pytest
from helpers import encode, read_report, write_pairs
from httpserver import make_image_bytes
from PIL import Image

from aligndata.inspect.ledger import read_ledger
from aligndata.cli import main


def recompressed_smaller(data: bytes) -> bytes:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    return encode(image.resize((image.width * 3 // 4, image.height * 3 // 4)), "JPEG", quality=60)


@pytest.fixture(scope="module")
def checked_run(tmp_path_factory, http_server):
    base = tmp_path_factory.mktemp("checks")
    eval_dir = base / "eval"
    eval_dir.mkdir()
    originals = [make_image_bytes(480, 360, seed=900 + i) for i in range(3)]
    for i, data in enumerate(originals):
        (eval_dir / f"val-{i}.jpg").write_bytes(data)
    index = base / "eval.npz"
    assert main(["eval-index", "build", "--images", str(eval_dir), "--output", str(index), "--workers", "1"]) == 0

    def serve(path, data):
        http_server.add(path, data)
        return http_server.url(path)

    dup = serve("/checks/copy-of-val-1.jpg", recompressed_smaller(originals[1]))
    clean = serve("/checks/clean.jpg", make_image_bytes(400, 300, seed=950))
    mixed = serve("/checks/mixed.jpg", make_image_bytes(400, 300, seed=951))
    words = serve("/checks/words-only.jpg", make_image_bytes(400, 300, seed=952))
    red = serve("/checks/red.jpg", _solid((230, 10, 10)))
    rows = [
        (dup, "a copy of an evaluation photo here", "eval_set_duplicate"),
        (dup, "the same copy with an nsfw caption", "eval_set_duplicate"),  # downloaded: the image rule comes first
        (clean, "a perfectly ordinary holiday photo", None),
        (mixed, "an ordinary caption for this image", None),
        (mixed, "a porn caption on the same image", "nsfw"),
        (words, "hot pornstar photo shoot today", "nsfw"),  # every row flagged: never downloaded
        (http_server.url("/checks/xvideos/thumb.jpg"), "a thumbnail from a video site", "nsfw"),
        (red, "a plain red square on its own", "nsfw"),  # the image plugin
    ]
    pairs = write_pairs(base / "pairs.parquet", rows)
    out = base / "out"
    assert main(["curate", "--input", pairs, "--output", str(out), "--allow-private-networks", "--quiet",
                 "--eval-index", str(index), "--nsfw", "keywords,nsfw_plugin_example:redness",
                 "--nsfw-threshold", "0.5"]) == 0
    return out, rows, words


def _solid(colour):
    return encode(Image.new("RGB", (300, 300), colour), "JPEG", quality=90)


@pytest.mark.e2e
def test_reasons_follow_the_documented_order(checked_run):
    out, rows, _ = checked_run
    ledger = {r["source_row"]: r for r in read_ledger(out, "rejected").to_pylist()}
    assert {i: ledger[i]["reason"] if i in ledger else None for i in range(len(rows))} == \
        {i: expected for i, (_, _, expected) in enumerate(rows)}
    assert ledger[0]["detail"].startswith("val-1.jpg d=")  # the eval image's id and the distance
    assert "porn" in ledger[4]["detail"] and "(caption)" in ledger[4]["detail"]
    assert "(url)" in ledger[6]["detail"]
    assert ledger[7]["detail"].startswith("nsfw_plugin_example:redness:0.")  # the plugin's score
    report = read_report(out)
    assert report["accounting_ok"] and report["kept"] == 2


@pytest.mark.e2e
def test_rows_flagged_by_words_alone_are_never_downloaded(checked_run, http_server):
    _, _, words_url = checked_run
    assert http_server.hits(words_url) == 0
    assert http_server.hits("/checks/xvideos/thumb.jpg") == 0


def test_bad_check_options_are_clear_errors(tmp_path, capsys):
    pairs = write_pairs(tmp_path / "p.parquet", [("http://a.test/x.jpg", "a b c d")])
    assert main(["curate", "--input", pairs, "--output", str(tmp_path / "o"),
                 "--eval-index", str(tmp_path / "missing.npz")]) == 2
    assert "missing.npz" in capsys.readouterr().err
    assert main(["curate", "--input", pairs, "--output", str(tmp_path / "o2"), "--nsfw", "nudenet"]) == 2
    assert "aligndata[nsfw]" in capsys.readouterr().err

"""`aligndata shards-from-labels`: real image files in an ImageFolder tree or a CSV -> shards with .cls, the
ledger of what could not be read, byte-identical reruns, and the trainer's reader on the output."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import encode, iter_samples, png_header_only
from PIL import Image

from aligndata.cli import main
from aligndata.inspect.ledger import read_ledger
from aligndata.shards.contract import META_COLUMNS


def _photo(width: int, height: int, colour: tuple[int, int, int], mode: str = "RGB") -> Image.Image:
    """A photo-like picture (gradient + a block), so codecs and hashes see structure."""
    img = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    img.paste(Image.new("RGB", (width // 3, height // 3), colour), (width // 4, height // 4))
    return img.convert(mode)


def _oriented_jpeg(width: int, height: int, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(_photo(width, height, (200, 40, 40)), "JPEG", quality=92, exif=exif.tobytes())


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """ROOT/CLASS/... with JPEGs, PNGs (palette, RGBA, 16-bit grey), a CMYK JPEG, an EXIF-rotated JPEG, a nested
    folder, a pixel bomb, a broken file, a README and an empty class."""
    root = tmp_path_factory.mktemp("labelled") / "images"
    cat, dog, fish = root / "cat", root / "dog", root / "zebra fish"
    for d in (cat, dog, fish / "deep", root / "empty class"):
        d.mkdir(parents=True)
    for i in range(4):
        (cat / f"cat{i}.jpg").write_bytes(encode(_photo(320 + 8 * i, 240, (210, 120 + i * 20, 30)), "JPEG",
                                                 quality=90))
        (dog / f"dog{i}.png").write_bytes(encode(_photo(240, 300, (30, 60 + i * 30, 200)), "PNG"))
    (dog / "palette.png").write_bytes(encode(_photo(260, 260, (0, 200, 0)).convert("P"), "PNG"))
    (dog / "alpha.PNG").write_bytes(encode(_photo(250, 210, (90, 0, 90), "RGBA"), "PNG"))
    (fish / "cmyk.jpg").write_bytes(encode(_photo(300, 220, (10, 10, 220), "CMYK"), "JPEG"))
    (fish / "rotated.jpg").write_bytes(_oriented_jpeg(400, 240, 6))  # displayed 240 x 400
    (fish / "deep" / "grey16.png").write_bytes(encode(_photo(230, 230, (0, 0, 0)).convert("I;16"), "PNG"))
    (fish / "bomb.png").write_bytes(png_header_only(10000, 10000))  # 100 M pixels > Pillow's (and our) limit
    (cat / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (cat / "README.txt").write_text("not an image")
    (root / "LICENSE").write_text("a file beside the classes")
    return root


def _run(*args: str) -> int:
    return main(["shards-from-labels", *args, "--quiet"])


@pytest.fixture(scope="module")
def written(tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("labelled_out") / "out"
    assert _run("--images", str(tree), "--output", str(out), "--samples-per-shard", "5") == 0
    return out


def test_folder_becomes_classes_with_every_file_accounted_for(written):
    report = json.loads((written / "report.json").read_text())
    assert (written / "classnames.txt").read_text() == "cat\ndog\nempty class\nzebra fish\n"  # ImageFolder's order
    assert report["input_files"] == 15 and report["kept"] == 13
    assert report["rejected"] == {"decode_failed": 2} and report["accounting_ok"]
    assert report["samples_per_class"] == {"cat": 4, "dog": 6, "empty class": 0, "zebra fish": 3}
    assert report["empty_classes"] == ["empty class"]
    assert report["not_images"] == {"files": 2, "examples": ["LICENSE", "cat/README.txt"]}
    ledger = read_ledger(str(written), "rejected").to_pylist()
    assert sorted((r["url"], r["reason"], r["detail"]) for r in ledger) == [
        ("cat/broken.jpg", "decode_failed", "truncated"),
        ("zebra fish/bomb.png", "decode_failed", "decompression_bomb:10000x10000")]
    assert {r["caption"] for r in ledger} == {"cat", "zebra fish"}
    sizes = json.loads((written / "sizes.json").read_text())
    assert sizes == {"00000.tar": 5, "00001.tar": 5, "00002.tar": 3}


def test_samples_have_curates_layout_class_and_caption(written):
    names = (written / "classnames.txt").read_text().splitlines()
    samples = list(iter_samples(written))
    assert len(samples) == 13
    by_url = {}
    for sample in samples:
        meta = json.loads(sample["json"])
        assert set(META_COLUMNS) <= set(meta) and meta["key"] == meta["uid"] == sample["__key__"]
        cls = int(sample["cls"])
        assert meta["cls"] == cls and sample["txt"].decode() == names[cls] == meta["caption"]
        assert Image.open(io.BytesIO(sample["jpg"])).mode in ("RGB", "L")
        assert min(meta["width"], meta["height"]) <= 346
        by_url[meta["url"]] = meta
    rotated = by_url["zebra fish/rotated.jpg"]
    assert (rotated["original_width"], rotated["original_height"]) == (240, 400)  # EXIF orientation applied
    assert "zebra fish/deep/grey16.png" in by_url and "dog/palette.png" in by_url and "dog/alpha.PNG" in by_url
    with tarfile.open(written / "00000.tar") as tar:  # members of a sample adjacent: image, cls, json, txt
        members = tar.getmembers()
    assert [m.name.split(".", 1)[1] for m in members[:4]] == ["jpg", "cls", "json", "txt"]
    assert all(m.mtime == 0 and m.uid == 0 for m in members)
    parquet = pq.read_table(written / "00000.parquet")
    assert parquet.column("cls").type == "int64" and parquet.num_rows == 5
    assert parquet.column_names[:11] == list(META_COLUMNS)
    stats = json.loads((written / "00000_stats.json").read_text())
    assert stats["count"] == stats["successes"] == 5 and stats["status_dict"] == {"success": 5}
    # uid order mixes the classes: the first shard is not one class (a walk order would be)
    assert len({json.loads(s["json"])["cls"] for s in samples[:5]}) > 1


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in ("report.json", "config.json")}


def test_two_runs_are_byte_identical_with_or_without_a_pool(tree, written, tmp_path):
    again = tmp_path / "again"
    assert _run("--images", str(tree), "--output", str(again), "--samples-per-shard", "5", "--processes", "2") == 0
    assert _files(again) == _files(written)
    report = {k: v for k, v in json.loads((again / "report.json").read_text()).items() if k != "seconds"}
    assert report == {k: v for k, v in json.loads((written / "report.json").read_text()).items() if k != "seconds"}


def test_csv_rows_missing_files_duplicates_and_extra_columns(tree, tmp_path):
    listing = tmp_path / "labels.csv"
    listing.write_text(
        "path,label,source\n"
        f"{tree}/cat/cat0.jpg,tabby cat,a\n"
        "cat/cat1.jpg,tabby cat,b\n"  # relative to --root
        "dog/dog0.png,dog,c\n"
        "dog/nowhere.png,dog,d\n"  # missing
        "dog/dog0.png,dog,e\n"  # the same path and label again
        ",dog,f\n"  # no path
        "dog/dog1.png,,g\n")  # no label
    out = tmp_path / "out"
    assert _run("--csv", str(listing), "--root", str(tree), "--output", str(out)) == 0
    assert (out / "classnames.txt").read_text() == "dog\ntabby cat\n"
    report = json.loads((out / "report.json").read_text())
    assert report["kept"] == 3 and report["accounting_ok"]
    assert report["rejected"] == {"duplicate_pair": 1, "file_missing": 1, "invalid_row": 2}
    ledger = read_ledger(str(out), "rejected").to_pylist()
    assert [(r["source_row"], r["reason"], r["detail"]) for r in ledger] == [
        (3, "file_missing", "no such file"), (4, "duplicate_pair", "the same path and label on an earlier row"),
        (5, "invalid_row", "empty_path"), (6, "invalid_row", "empty_label")]
    metas = {m["source"]: m for m in (json.loads(s["json"]) for s in iter_samples(out))}
    assert set(metas) == {"a", "b", "c"} and metas["b"]["url"] == "cat/cat1.jpg" and metas["a"]["cls"] == 1


def test_nothing_readable_fails_with_one_line_and_the_ledger(tmp_path, capsys):
    root = tmp_path / "bad"
    (root / "x").mkdir(parents=True)
    (root / "x" / "a.jpg").write_bytes(b"junk")
    (root / "x" / "b.png").write_bytes(b"junk too")
    out = tmp_path / "out"
    assert _run("--images", str(root), "--output", str(out)) == 2
    err = capsys.readouterr().err
    assert "read no usable image: all 2 files were rejected (decode_failed 2)" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert len(read_ledger(str(out), "rejected")) == 2 and not list(out.glob("*.tar"))
    listing = tmp_path / "bad.csv"
    listing.write_text("file,class\na.jpg,x\n")
    assert _run("--csv", str(listing), "--output", str(tmp_path / "o2")) == 2
    assert "needs a header row with 'path' and 'label'" in capsys.readouterr().err
    assert _run("--images", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o3")) == 2
    assert "not a directory" in capsys.readouterr().err
    assert _run("--images", str(root), "--output", str(out)) == 2  # not empty, no --overwrite
    assert "--overwrite" in capsys.readouterr().err


def test_tokenizer_train_learns_the_prompts_of_its_classes(written, tmp_path, capsys):
    """The captions of an image-label set are bare class names; `train` trains it as prompts ("a photo of a cat."),
    so `tokenizer train` learns those texts too: "photo" is one word piece, not spelled out letter by letter."""
    from transformers import AutoTokenizer

    tok_dir = tmp_path / "tok"
    assert main(["tokenizer", "train", "--data", str(written), "--output", str(tok_dir), "--vocab-size", "300",
                 "--min-frequency", "1"]) == 0
    assert f"the prompts of the 4 classes in {written / 'classnames.txt'}" in capsys.readouterr().err
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    assert tok.tokenize("a photo of a zebra fish.") == ["a", "photo", "of", "a", "zebra", "fish", "."]
    # joined with an image-text set in another directory (the docs' web::in21k): its classes' prompts still count
    from aligndata.models import synthetic

    web = tmp_path / "web"
    synthetic.write_world(str(web), shards=1, per_shard=8, seed=0)
    joined = tmp_path / "tok2"
    assert main(["tokenizer", "train", "--data", f"{web}::{written}", "--output", str(joined), "--vocab-size",
                 "400", "--min-frequency", "1"]) == 0
    assert f"the prompts of the 4 classes in {written / 'classnames.txt'})" in capsys.readouterr().err


def test_the_trainer_reads_the_output_with_prompts_of_its_classes(written):
    from aligndata.models import data
    from aligndata.models.tokenizer import train_tokenizer
    from aligndata.models.train import shard_set_classnames
    from aligndata.shards.spec import resolve

    names = (written / "classnames.txt").read_text().splitlines()
    assert shard_set_classnames(resolve(str(written))) == (names, str(written / "classnames.txt"))  # train finds it
    tokenizer = train_tokenizer([f"a photo of a {n}." for n in names] * 3, vocab_size=100, min_frequency=1)
    cfg = data.DataConfig(urls=resolve(str(written)).paths, batch_size=13, image_size=32, resize_size=36,
                          shuffle_buffer=0, classnames=names, templates=("a photo of a {}.",))
    batch = next(iter(data.Loader(cfg, tokenizer)))
    assert batch["pixel_values"].shape == (13, 3, 32, 32)
    assert [f"a photo of a {names[int(label)]}." for label in batch["labels"]] == batch["texts"]

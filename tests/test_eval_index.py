"""Eval index files, `aligndata eval-index`, and the ImageChecks object the fetch stage calls."""

from __future__ import annotations

import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from helpers import COCO, encode, needs_coco
from PIL import Image, ImageOps

from aligndata.filters import reasons
from aligndata.filters.dedup import HashSpec
from aligndata.filters.image import perceptual_hash
from aligndata.commands.eval_index import main as eval_main
from aligndata.images.eval_index import EvalIndexError, build_index, load_index, read_index, write_index
from aligndata.filters.dedup import DEFAULT_EVAL_HAMMING
from aligndata.images.content_checks import ImageChecks, ImageChecksError
from aligndata.io.inputs import InputError


def smooth_image(seed: int, size=(240, 180)) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), "RGB")
    return small.resize(size, Image.Resampling.BICUBIC)


@pytest.fixture
def eval_dir(tmp_path) -> Path:
    """Three eval images (one in a subfolder), a broken .jpg and a text file that is ignored."""
    root = tmp_path / "evalset"
    (root / "sub").mkdir(parents=True)
    smooth_image(1).save(root / "a.jpg", quality=95)
    smooth_image(2).save(root / "b.png")
    smooth_image(3).save(root / "sub" / "c.jpg", quality=95)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "notes.txt").write_text("not an image")
    return root


def write_shard(path: Path, samples: dict[str, Image.Image]) -> None:
    """A WebDataset shard like curate's: KEY.jpg, KEY.json, KEY.txt, sorted."""
    with tarfile.open(path, "w") as tar:
        for key in sorted(samples):
            for ext, data in (("jpg", encode(samples[key], "JPEG", quality=95)), ("json", b"{}"), ("txt", b"caption")):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


# --------------------------------------------------------------------------------------------------- build


def test_build_from_a_directory_names_ids_by_relative_path_and_skips_broken_files(eval_dir, tmp_path):
    out = tmp_path / "eval.npz"
    result = build_index([str(eval_dir)], str(out), workers=1)
    assert result.count == 3
    assert list(result.skipped) == [str(eval_dir / "broken.jpg")]
    meta, arrays = read_index(str(out))
    assert meta["version"] == 1 and meta["hash_kind"] == "phash" and meta["bits"] == 64 and meta["count"] == 3
    index = load_index(str(out), radius=DEFAULT_EVAL_HAMMING)
    assert [index.eval_id(i) for i in range(3)] == ["a.jpg", "b.png", "sub/c.jpg"]
    # the stored hash is the pipeline's phash of the decoded image
    stored = HashSpec().to_hex(int(arrays["hashes"][1, 0]))
    assert stored == perceptual_hash(Image.open(eval_dir / "b.png").convert("RGB"))
    assert index.match(HashSpec().hash_image(ImageOps.mirror(smooth_image(3)))).eval_id == "sub/c.jpg"


def test_build_from_a_glob_and_from_shards_with_prefixes(eval_dir, tmp_path):
    shard = tmp_path / "shards" / "00000.tar"
    shard.parent.mkdir()
    write_shard(shard, {"0123abcd": smooth_image(10), "4567ef01": smooth_image(11)})
    out = tmp_path / "mixed.npz"
    result = build_index([str(eval_dir / "*.jpg"), str(tmp_path / "shards" / "*.tar")], str(out),
                         id_prefix="x/", workers=2)
    index = load_index(str(out), radius=4)
    ids = [index.eval_id(i) for i in range(result.count)]
    assert ids == ["x/a.jpg", "x/0123abcd", "x/4567ef01"]  # broken.jpg skipped; keys from the shard
    assert index.match(HashSpec().hash_image(smooth_image(11))).eval_id == "x/4567ef01"


def test_duplicate_ids_and_empty_inputs_are_errors(eval_dir, tmp_path):
    with pytest.raises(EvalIndexError, match="duplicate eval image id 'a.jpg'"):
        build_index([str(eval_dir / "a.jpg"), str(eval_dir / "a.jpg")], str(tmp_path / "x.npz"), workers=1)
    with pytest.raises(EvalIndexError, match="no such file"):
        build_index([str(tmp_path / "missing")], str(tmp_path / "x.npz"), workers=1)
    with pytest.raises(EvalIndexError, match="matches no file"):
        build_index([str(tmp_path / "*.webp")], str(tmp_path / "x.npz"), workers=1)
    with pytest.raises(EvalIndexError, match="no decodable eval image"):
        build_index([str(eval_dir / "broken.jpg")], str(tmp_path / "x.npz"), workers=1)


def test_other_hash_kinds_and_sizes_are_stored_and_searched(eval_dir, tmp_path):
    out = tmp_path / "d16.npz"
    build_index([str(eval_dir)], str(out), HashSpec("dhash", 16), workers=1)
    index = load_index(str(out), radius=10)
    assert index.spec == HashSpec("dhash", 16) and index.index.hashes.shape == (6, 4)
    assert index.match(HashSpec("dhash", 16).hash_image(smooth_image(1))).eval_id == "a.jpg"


# ------------------------------------------------------------------------------------------- file format


def test_unreadable_and_foreign_files_are_named_in_errors(tmp_path, eval_dir):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"hello")
    with pytest.raises(EvalIndexError, match=f"{junk}: not an eval index file"):
        load_index(str(junk), 8)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, hashes=np.zeros((1, 1), dtype=np.uint64))
    with pytest.raises(EvalIndexError, match="no format marker"):
        load_index(str(foreign), 8)
    with pytest.raises(EvalIndexError, match="cannot read"):
        load_index(str(tmp_path / "nope.npz"), 8)
    future = tmp_path / "future.npz"
    write_index(str(future), {"version": 99}, ["a"], np.zeros((1, 1), np.uint64), np.zeros((1, 1), np.uint64))
    with pytest.raises(EvalIndexError, match="version 99 is not supported"):
        load_index(str(future), 8)
    good = tmp_path / "good.npz"
    build_index([str(eval_dir / "a.jpg")], str(good), workers=1)
    with pytest.raises(EvalIndexError, match="--eval-hamming 65 is outside 0..64"):
        load_index(str(good), 65)


# ------------------------------------------------------------------------------------------------ the CLI


def test_cli_build_info_query(eval_dir, tmp_path, capsys):
    out = str(tmp_path / "cli.npz")
    assert eval_main(["eval-index", "build", "--images", str(eval_dir), "--output", out, "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert "3 eval images" in err and "broken.jpg: " in err
    assert eval_main(["eval-index", "build", "--images", str(eval_dir), "--output", out]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert eval_main(["eval-index", "info", out]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 3
    flipped = tmp_path / "flipped.jpg"
    ImageOps.mirror(smooth_image(1)).save(flipped, quality=90)
    other = tmp_path / "other.jpg"
    smooth_image(77).save(other)
    assert eval_main(["eval-index", "query", out, str(flipped), str(other)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{flipped}\tduplicate\ta.jpg d=") and lines[0].endswith("mirrored")
    assert lines[1] == f"{other}\tunique"
    assert eval_main(["eval-index", "build", "--images", str(eval_dir), "--output", out, "--overwrite",
                      "--hash", "whash", "--hash-size", "6"]) == 2
    assert "power-of-two" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- ImageChecks


@pytest.fixture
def index_file(eval_dir, tmp_path) -> str:
    out = str(tmp_path / "checks.npz")
    build_index([str(eval_dir)], out, workers=1)
    return out


def test_image_checks_apply_eval_dedup_before_nsfw(index_file):
    checks = ImageChecks.from_options(index_file, 8, "keywords", 0.5)
    copy = smooth_image(2)
    reason, detail = checks.check_image(copy, perceptual_hash(copy))
    assert reason == reasons.EVAL_SET_DUPLICATE and detail == "b.png d=0"
    assert checks.check_text("porn", "http://example.com/b.jpg") == (reasons.NSFW, "keyword:porn (caption)")
    other = smooth_image(50)
    assert checks.check_image(other, perceptual_hash(other)) is None
    assert checks.check_text("free porn", "http://e.com/x.jpg") == (reasons.NSFW, "keyword:porn (caption)")
    assert checks.check_text("a photo of a dog", "http://e.com/x.jpg") is None


def test_image_checks_boundary_uses_eval_hamming(index_file):
    value = HashSpec().hash_image(smooth_image(2))  # b.png: lossless, so its stored hash is this one
    six_off = HashSpec().to_hex(value ^ 0b111111)
    assert ImageChecks.from_options(index_file, 6, "off", 0.5).check_image(None, six_off)[1] == "b.png d=6"
    assert ImageChecks.from_options(index_file, 5, "off", 0.5).check_image(None, six_off) is None


def test_image_checks_pickle_as_options_and_reload_lazily(index_file):
    checks = ImageChecks.from_options(index_file, 8, "keywords", 0.5)
    blob = pickle.dumps(checks)
    assert len(blob) < 1000  # the index is not in the pickle
    again = pickle.loads(blob)
    copy = smooth_image(3)
    assert again.check_image(copy, perceptual_hash(copy))[1].startswith("sub/c.jpg d=")  # a JPEG: d 0..2


def test_image_checks_rehash_for_other_index_kinds(eval_dir, tmp_path):
    out = str(tmp_path / "dhash.npz")
    build_index([str(eval_dir)], out, HashSpec("dhash", 8), workers=1)
    checks = ImageChecks.from_options(out, 4, "off", 0.5)
    image = smooth_image(1)
    assert checks.check_image(image, perceptual_hash(image))[0] == reasons.EVAL_SET_DUPLICATE
    with pytest.raises(ImageChecksError, match="the image is needed"):
        checks.check_image(None, perceptual_hash(image))


class _Decoded:
    """A decoded image as the fetch stage hands it over: the Pillow copy counted where a check asks for it."""

    def __init__(self, image):
        self._image, self.copies = image, 0

    @property
    def image(self):
        self.copies += 1
        return self._image


def test_image_checks_copy_the_pixels_only_for_a_check_that_reads_them(index_file, eval_dir, tmp_path):
    assert not ImageChecks.from_options(None).checks_images  # keywords alone: nothing to check after download
    copy = smooth_image(2)
    pipeline_index = ImageChecks.from_options(index_file, 8, "keywords", 0.5)
    decoded = _Decoded(copy)
    assert pipeline_index.checks_images
    assert pipeline_index.check_decoded(decoded, perceptual_hash(copy))[0] == reasons.EVAL_SET_DUPLICATE
    assert decoded.copies == 0  # the pipeline's own hash: its hex is enough
    out = str(tmp_path / "dhash.npz")
    build_index([str(eval_dir)], out, HashSpec("dhash", 8), workers=1)
    decoded = _Decoded(copy)
    assert ImageChecks.from_options(out, 4, "off", 0.5).check_decoded(decoded, perceptual_hash(copy))[0] == \
        reasons.EVAL_SET_DUPLICATE
    assert decoded.copies == 1  # another hash kind is computed from the pixels
    plugin = ImageChecks.from_options(None, 8, "nsfw_plugin_example:redness", 0.99)
    decoded = _Decoded(smooth_image(50))
    assert plugin.checks_images and plugin.check_decoded(decoded, None) is None and decoded.copies == 1


def test_image_checks_option_errors_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="nope.npz: cannot read"):
        ImageChecks.from_options(str(tmp_path / "nope.npz"), 8, "keywords", 0.5)
    with pytest.raises(InputError, match="--eval-hamming must be >= 0"):
        ImageChecks.from_options(None, -1, "keywords", 0.5)
    with pytest.raises(InputError, match="unknown --nsfw mode"):
        ImageChecks.from_options(None, 8, "bogus", 0.5)
    nothing = ImageChecks.from_options(None, None, "off", 0.5)
    assert not nothing.enabled and nothing.check_text("porn", "") is None and nothing.check_image(None, None) is None
    assert ImageChecks.from_options(None).enabled  # keywords by default


@needs_coco
def test_real_coco_index_catches_transformed_copies_through_the_pipeline_hash(tmp_path):
    from aligndata.images.process import ImageConfig, process_image

    photos = sorted(COCO.glob("*.jpg"))[:10]
    out = str(tmp_path / "coco.npz")
    build_index([str(COCO / "00000000*.jpg")], out, id_prefix="coco/", workers=2)
    checks = ImageChecks.from_options(out)
    for photo in photos:
        image = Image.open(photo).convert("RGB")
        if photo.name.startswith("00000000"):
            for copy in (ImageOps.mirror(image), image.resize((image.width // 2 + 1, image.height // 2 + 1))):
                outcome = process_image(encode(copy, "JPEG", quality=95), ImageConfig(min_side=100))  # what curate stores
                reason, detail = checks.check_image(copy, outcome.phash)
                assert reason == reasons.EVAL_SET_DUPLICATE and detail.startswith(f"coco/{photo.name} d=")

"""`aligndata score`: per-shard cosine scores equal plain transformers / open_clip calls, at any batch size; resume,
model ids, failed samples and user errors.

The shards are the real curate output of ``aligndata example`` (3 shards, 18 samples; copied before anything is
written beside them). Models: a tiny ALIGN trained for a few steps with `aligndata train`, a transformers CLIP built
from a small random CLIPConfig and saved with its processor, and (with the openclip extra) a small random open_clip
model saved as a state dict and as open_clip's own folder.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from helpers import iter_samples
from PIL import Image

from aligndata.cli import main
from aligndata.models import synthetic

TINY_TRAIN = ["--preset", "tiny", "--image-size", "32", "--resize-size", "36", "--workers", "0", "--no-progress",
              "--steps", "3", "--batch-size", "6", "--vocab-size", "300", "--save-every", "100"]
ATOL = 1e-5


def score(*args: str) -> int:
    return main(["score", *args, "--no-progress"])


def copy_shards(example_output: Path, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for tar in sorted(Path(example_output).glob("*.tar")):
        shutil.copy(tar, directory / tar.name)
    shutil.copy(Path(example_output) / "sizes.json", directory / "sizes.json")
    return directory


def read_scores(directory: Path) -> list[dict]:
    rows = []
    for path in sorted(Path(directory).glob("*_scores.parquet")):
        rows += pq.read_table(path).to_pylist()
    return rows


def summary(directory: Path) -> dict:
    return json.loads((Path(directory) / "scores.json").read_text())


def samples(shards: Path) -> list[tuple[str, Image.Image, str]]:
    """(key, decoded RGB image, caption) of every sample, read by webdataset and decoded by Pillow."""
    return [(s["__key__"], Image.open(io.BytesIO(s["jpg"])).convert("RGB"), s["txt"].decode().strip())
            for s in iter_samples(shards)]


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.float(), b.float()).item()


def pooled(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def check_scores(rows: list[dict], expected: dict[str, float], model: str) -> None:
    assert [r["key"] for r in rows] == list(expected)  # every sample, in shard order
    for row in rows:
        assert row["reason"] is None and row["model"] == model and row["uid"] == row["key"]
        assert abs(row["score"] - expected[row["key"]]) <= ATOL, (row, expected[row["key"]])


# ------------------------------------------------------------------------------------------------ our ALIGN


@pytest.fixture(scope="module")
def run(example_output, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("score") / "run"
    assert main(["train", "--data", str(example_output), "--output", str(run), *TINY_TRAIN]) == 0
    return run


@pytest.fixture(scope="module")
def align_reference(run, example_output) -> dict[str, float]:
    """Each sample's cosine from plain transformers calls, one sample at a time."""
    from transformers import AlignModel, AutoImageProcessor, AutoTokenizer

    final = str(run / "final")
    model = AlignModel.from_pretrained(final).eval()
    tokenizer = AutoTokenizer.from_pretrained(final)
    # The saved processor is Pillow's (the torchvision backend resizes a little differently).
    processor = AutoImageProcessor.from_pretrained(final, backend="pil")
    out = {}
    with torch.no_grad():
        for key, img, text in samples(example_output):
            image = pooled(model.get_image_features(**processor(images=img, return_tensors="pt")))
            caption = pooled(model.get_text_features(**tokenizer([text], return_tensors="pt")))
            out[key] = cosine(image, caption)
    return out


@pytest.mark.parametrize("batch_size,workers", [(1, 0), (7, 2)])
def test_scores_are_plain_transformers_cosines_at_any_batch_size(run, align_reference, example_output, tmp_path,
                                                                 batch_size, workers):
    shards = copy_shards(example_output, tmp_path / "shards")
    assert score(str(shards), "--model", str(run), "--batch-size", str(batch_size), "--workers", str(workers)) == 0
    result = summary(shards)  # default output: beside the shards
    assert result["model"].startswith("run@") and result["kind"] == "aligndata"
    assert (result["shards"], result["samples"], result["scored"], result["failed"]) == (3, 18, 18, {})
    assert sorted(p.name for p in shards.glob("*_scores.parquet")) == [f"0000{i}_scores.parquet" for i in range(3)]
    table = pq.read_table(shards / "00000_scores.parquet")
    assert [str(t) for t in table.schema.types] == ["string", "string", "float", "string", "string"]
    check_scores(read_scores(shards), align_reference, result["model"])


def test_model_id_names_the_run_and_hashes_its_bytes(run, example_output, tmp_path):
    from safetensors.torch import load_file, save_file

    shards = copy_shards(example_output, tmp_path / "shards")
    assert score(str(shards), "--model", str(run / "final"), "--output", str(tmp_path / "a")) == 0
    assert score(str(shards), "--model", str(run), "--output", str(tmp_path / "b")) == 0
    assert summary(tmp_path / "a")["model"] == summary(tmp_path / "b")["model"]  # RUN and RUN/final: one model
    # Same file names and sizes, one weight changed: another model.
    other = tmp_path / "run" / "final"
    shutil.copytree(run / "final", other)
    weights = load_file(other / "model.safetensors")
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name] = weights[name] + 1e-3
    save_file(weights, other / "model.safetensors", metadata={"format": "pt"})
    assert os.path.getsize(other / "model.safetensors") == os.path.getsize(run / "final" / "model.safetensors")
    assert score(str(shards), "--model", str(other), "--output", str(tmp_path / "c")) == 0
    assert summary(tmp_path / "c")["model"] != summary(tmp_path / "a")["model"]


def test_resume_recomputes_only_the_missing_shard(run, example_output, tmp_path, capsys):
    shards = copy_shards(example_output, tmp_path / "shards")
    assert score(str(shards), "--model", str(run)) == 0
    files = sorted(shards.glob("*_scores.parquet"))
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    (shards / "00001_scores.parquet").unlink()
    assert score(str(shards), "--model", str(run)) == 0
    result = summary(shards)
    in_shard = json.loads((shards / "sizes.json").read_text())["00001.tar"]
    assert (result["shards_scored_now"], result["shards_kept"], result["samples_scored_now"]) == (1, 2, in_shard)
    assert (result["shards"], result["samples"]) == (3, 18)  # the totals count the kept files too
    for path in files:
        mtime, data = before[path.name]
        assert path.read_bytes() == data
        if path.name == "00001_scores.parquet":
            assert path.stat().st_mtime_ns != mtime
        else:
            assert path.stat().st_mtime_ns == mtime  # not rewritten
    # Nothing left to do: nothing rewritten.
    mtimes = {p.name: p.stat().st_mtime_ns for p in files}
    assert score(str(shards), "--model", str(run)) == 0
    assert summary(shards)["shards_scored_now"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in files} == mtimes


def test_scores_of_another_model_or_precision_are_refused_unless_overwrite(run, clip_dir, example_output, tmp_path,
                                                                          capsys):
    shards = copy_shards(example_output, tmp_path / "shards")
    assert score(str(shards), "--model", str(run)) == 0
    ours = summary(shards)["model"]
    capsys.readouterr()
    assert score(str(shards), "--model", str(clip_dir)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("aligndata score: error: ")
    assert f"was scored by {ours}" in err and "(and 2 more)" in err and "--overwrite" in err
    assert score(str(shards), "--model", str(run), "--precision", "bf16") == 2
    assert "was scored at fp32, not bf16" in capsys.readouterr().err
    assert {r["model"] for r in read_scores(shards)} == {ours}  # refused runs changed nothing
    assert score(str(shards), "--model", str(clip_dir), "--overwrite") == 0
    clip = summary(shards)["model"]
    assert clip.startswith("clip@") and {r["model"] for r in read_scores(shards)} == {clip}


# ------------------------------------------------------------------------------------------------ failed samples


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_unscorable_samples_keep_their_row_with_a_reason(run, example_output, tmp_path):
    good = [s for s in iter_samples(example_output)][:2]
    shards = tmp_path / "shards"
    shards.mkdir()
    with tarfile.open(shards / "00000.tar", "w") as tar:
        for key, jpg, txt in [(good[0]["__key__"], good[0]["jpg"], good[0]["txt"]),
                              ("garbage", b"not an image at all", b"a caption"),
                              ("noimage", None, b"a caption without its image"),
                              ("nocaption", good[1]["jpg"], b"   "),
                              (good[1]["__key__"], good[1]["jpg"], good[1]["txt"])]:
            if jpg is not None:
                _member(tar, f"{key}.jpg", jpg)
            _member(tar, f"{key}.txt", txt)
    # A truncated copy of a real shard: the samples before the cut are scored, the cut is named.
    data = (example_output / "00000.tar").read_bytes()
    (shards / "00001.tar").write_bytes(data[: len(data) // 2])
    assert score(str(shards), "--model", str(run), "--batch-size", "2") == 0
    rows = pq.read_table(shards / "00000_scores.parquet").to_pylist()
    assert [(r["key"], r["reason"]) for r in rows] == [
        (good[0]["__key__"], None), ("garbage", "bad_image"), ("noimage", "missing_image"),
        ("nocaption", "missing_caption"), (good[1]["__key__"], None)]
    assert [r["score"] is None for r in rows] == [False, True, True, True, False]
    cut = pq.read_table(shards / "00001_scores.parquet").to_pylist()
    in_shard = json.loads((example_output / "sizes.json").read_text())["00000.tar"]
    assert 0 < len(cut) < in_shard
    # The cut may leave the last sample without its later members: it is listed, with what it lacks.
    assert any(r["reason"] is None for r in cut) and {r["reason"] for r in cut} <= {None, "missing_caption"}
    result = summary(shards)
    assert any("truncated" in p for p in result["shard_problems"]["00001"])
    reasons = [r["reason"] for r in rows + cut]
    assert result["failed"] == dict(Counter(r for r in reasons if r))
    assert (result["samples"], result["scored"]) == (len(reasons), reasons.count(None))


# ------------------------------------------------------------------------------------------------ transformers CLIP


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    """A random small CLIP saved with save_pretrained, its processor (image processor + tokenizer) beside it."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    chars = sorted(ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(chars + [c + "</w>" for c in chars])}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"],
                         eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    path = tmp_path_factory.mktemp("clip") / "clip"
    CLIPModel(config).save_pretrained(path)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(path)
    return path


def test_a_transformers_clip_checkpoint_scores_as_its_own_calls(clip_dir, example_output, tmp_path):
    from transformers import AutoProcessor, CLIPModel

    model = CLIPModel.from_pretrained(clip_dir).eval()
    processor = AutoProcessor.from_pretrained(clip_dir)
    expected = {}
    with torch.no_grad():
        for key, img, text in samples(example_output):
            image = pooled(model.get_image_features(**processor(images=img, return_tensors="pt")))
            caption = pooled(model.get_text_features(**processor.tokenizer([text], return_tensors="pt")))
            expected[key] = cosine(image, caption)
    out = tmp_path / "scores"
    assert score(str(example_output), "--model", str(clip_dir), "--output", str(out), "--batch-size", "5") == 0
    result = summary(out)
    assert result["kind"] == "transformers" and result["model"].startswith("clip@")
    assert result["model_settings"]["class"] == "CLIPModel"
    check_scores(read_scores(out), expected, result["model"])
    assert not list(example_output.glob("*_scores.parquet"))  # --output, not beside the shards


# ------------------------------------------------------------------------------------------------ open_clip

TINY_OPEN_CLIP = {"embed_dim": 16,
                  "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
                  "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}


def test_an_open_clip_model_scores_as_its_own_calls(example_output, tmp_path):
    try:
        import open_clip
    except ImportError:
        pytest.skip("open_clip is not installed (pip install 'aligndata[openclip]'; `make install` installs it): "
                    "the open_clip loader is NOT tested in this run")
    from safetensors.torch import save_file

    arch = tmp_path / "tiny-clip.json"
    arch.write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(arch)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-clip", pretrained=None)
    weights = tmp_path / "weights.pt"
    torch.save(model.state_dict(), weights)
    local = tmp_path / "local"  # open_clip's own folder: config + safetensors weights
    local.mkdir()
    (local / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_OPEN_CLIP, "preprocess_cfg": {}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, local / "open_clip_model.safetensors")

    model, _, preprocess = open_clip.create_model_and_transforms("tiny-clip", pretrained=str(weights))
    model.eval()
    tokenizer = open_clip.get_tokenizer("tiny-clip")
    expected = {}
    with torch.no_grad():
        for key, img, text in samples(example_output):
            expected[key] = cosine(model.encode_image(preprocess(img)[None]), model.encode_text(tokenizer([text])))

    for spec, prefix in [(f"open_clip:{arch}:{weights}", "open_clip:tiny-clip:weights.pt@"),
                         (str(local), "open_clip:local-dir:local@")]:
        out = tmp_path / f"scores-{len(prefix)}"
        assert score(str(example_output), "--model", spec, "--output", str(out), "--batch-size", "4") == 0
        result = summary(out)
        assert result["kind"] == "open_clip" and result["model"].startswith(prefix), result["model"]
        check_scores(read_scores(out), expected, result["model"])


# ------------------------------------------------------------------------------------------------ user errors


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("small") / "shards"
    synthetic.write_world(str(path), shards=2, per_shard=3)
    return path


def _not_a_dual_encoder(path: Path) -> None:
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                         intermediate_size=8)).save_pretrained(path)


def _unfinished_run(path: Path) -> None:
    (path / "checkpoints").mkdir(parents=True)


def _bad_config(path: Path) -> None:
    path.mkdir()
    (path / "config.json").write_text("{not json")


@pytest.mark.parametrize("case,make,extra,message", [
    ("missing model", None, [], "no such directory (models load from a local path only"),
    ("empty directory", lambda p: p.mkdir(), [], "not a model directory (no config.json"),
    ("broken config", _bad_config, [], "cannot load a transformers model"),
    ("not a dual encoder", _not_a_dual_encoder, [], "BertModel has no get_image_features/get_text_features"),
    ("unfinished run", _unfinished_run, [], "a training run without final/"),
    ("missing shards", "SHARDS", [], "no such file or directory"),
    ("no output for a glob", "GLOB", [], "--output is required"),
    ("open_clip without weights", "open_clip:ViT-B-32", [], None),
    ("open_clip unknown arch", "open_clip:no-such-arch:tag", [], None),
])
def test_user_errors_are_one_line_and_exit_2(small_shards, tmp_path, capsys, case, make, extra, message):
    shards, model = str(small_shards), str(tmp_path / "model")
    if make == "SHARDS":
        shards = str(tmp_path / "nope")
        model = str(tmp_path)
    elif make == "GLOB":
        shards = str(small_shards / "*.tar")
    elif isinstance(make, str):  # an open_clip spec
        model = make
        try:
            import open_clip  # noqa: F401
        except ImportError:
            message = "need the openclip extra"
        else:
            message = "give the weights" if case.endswith("weights") else "is not an open_clip architecture"
    elif make is not None:
        make(Path(model))
    capsys.readouterr()
    assert score(shards, "--model", model, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aligndata score: error: ") and "\n" not in err and "Traceback" not in err, err
    assert message in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_a_device_is_an_error(small_shards, capsys):
    assert score(str(small_shards), "--model", str(small_shards), "--device", "cuda") == 2
    assert "no CUDA device is available" in capsys.readouterr().err

"""Shard resolution, the training data stream (corrupt samples, consumers, resume position), optimizers."""

from __future__ import annotations

import io
import itertools
import math

import pytest
import torch
from PIL import Image

from aligndata.models import data, optim, synthetic, transforms
from aligndata.models.tokenizer import train_tokenizer
from aligndata.shards import spec as shard_spec
from aligndata.shards.writer import Sample


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    bad = [
        Sample("badimage0", b"this is not a jpeg", "jpg", "a red circle", {}),
        Sample("emptytext", synthetic.jpeg(Image.new("RGB", (40, 40), (200, 0, 0))), "jpg", "   ", {}),
    ]
    paths = synthetic.write_world(str(root), shards=3, per_shard=10, seed=3, extra={1: bad})
    return root, paths


@pytest.fixture(scope="module")
def tokenizer(world):
    texts = [p.format(c=c, s=s) for p in synthetic.PHRASES for c in synthetic.COLOURS for s in synthetic.SHAPES]
    return train_tokenizer(texts * 3, vocab_size=120, min_frequency=1)


def _resolve(spec):
    return shard_spec.resolve(spec).paths


def test_shard_specs_resolve_the_same_shards(world):
    root, paths = world
    assert _resolve(str(root)) == paths
    assert _resolve(str(root / "*.tar")) == paths
    assert _resolve(str(root / "{00000..00002}.tar")) == paths
    assert _resolve(f"file://{root}/") == paths  # file:// URLs resolve to plain local paths
    assert _resolve(f"{paths[0]}::{paths[0]}::{paths[2]}") == [paths[0], paths[2]]
    assert shard_spec.ShardSet("x", paths).total_samples() == 32  # 30 + the 2 corrupt ones sizes.json counts


def test_joined_specs_keep_part_order_sort_within_parts_and_drop_repeats(world):
    root, paths = world
    assert _resolve(f"{paths[2]}::{root}") == [paths[2], paths[0], paths[1]]
    assert _resolve(f"{root}/{{00002,00000}}.tar::file://{root}/*.tar") == [paths[2], paths[0], paths[1]]
    shards = shard_spec.resolve(f"{paths[1]}::{root / '0000[02].tar'}")
    assert shards.paths == [paths[1], paths[0], paths[2]]
    assert shards.sizes() == {paths[1]: 12, paths[0]: 10, paths[2]: 10}


def test_shard_sizes_need_a_well_formed_sizes_json(tmp_path, world):
    _, paths = world
    for i in range(2):
        (tmp_path / f"0000{i}.tar").write_bytes(open(paths[0], "rb").read())
    shards = shard_spec.resolve(str(tmp_path))
    assert shards.sizes() == {str(tmp_path / "00000.tar"): None, str(tmp_path / "00001.tar"): None}
    assert shards.total_samples() is None  # no sizes.json: unknown, not zero
    (tmp_path / "sizes.json").write_text('{"00000.tar": 10}')
    assert shard_spec.resolve(str(tmp_path)).total_samples() is None  # one shard unlisted
    (tmp_path / "sizes.json").write_text('{"00000.tar": 10, "00001.tar": -1}')
    with pytest.raises(shard_spec.ShardSetError, match="non-negative integer counts"):
        shard_spec.resolve(str(tmp_path)).total_samples()
    (tmp_path / "sizes.json").write_text('{"00000.tar": 10,')
    with pytest.raises(shard_spec.ShardSetError, match="cannot read sizes"):
        shard_spec.resolve(str(tmp_path)).sizes()


def test_shard_spec_errors_name_the_problem(tmp_path, world):
    root, paths = world
    with pytest.raises(shard_spec.ShardSetError, match="holds no .tar"):
        _resolve(str(tmp_path))
    with pytest.raises(shard_spec.ShardSetError, match="do not exist"):
        _resolve(str(root / "{00000..00005}.tar"))
    with pytest.raises(shard_spec.ShardSetError, match="matches no .tar"):
        _resolve(str(root / "zz*.tar"))
    with pytest.raises(shard_spec.ShardSetError, match="nope.*no such file"):  # names the part that failed
        _resolve(f"{paths[0]}::{root / 'nope'}")
    with pytest.raises(shard_spec.ShardSetError, match="empty"):
        _resolve("  ")
    with pytest.raises(shard_spec.ShardSetError, match="empty part"):
        _resolve(f"{paths[0]}::")


def test_fsspec_urls_resolve_and_read_sizes(world):
    fsspec = pytest.importorskip("fsspec")
    root, paths = world
    fs = fsspec.filesystem("memory")
    for name in ("00000.tar", "00001.tar", "sizes.json"):
        fs.pipe(f"/specs/{name}", (root / name).read_bytes())
    try:
        urls = ["memory:///specs/00000.tar", "memory:///specs/00001.tar"]
        assert _resolve("memory:///specs") == urls
        assert _resolve("memory:///specs/*.tar") == urls
        assert _resolve("memory:///specs/{00000..00001}.tar") == urls
        assert _resolve(f"memory:///specs/00001.tar::{paths[2]}") == [urls[1], paths[2]]  # schemes may mix
        assert shard_spec.resolve("memory:///specs").total_samples() == 22
    finally:
        fs.rm("/specs", recursive=True)


def _config(paths, **kw):
    base = dict(urls=paths, batch_size=4, image_size=24, resize_size=28, seed=5, shuffle_buffer=8, workers=0)
    base.update(kw)
    return data.DataConfig(**base)


def _take(loader, n):
    return list(itertools.islice(loader, n))


def test_corrupt_samples_are_skipped_and_counted(world, tokenizer):
    _, paths = world
    loader = data.Loader(_config(paths), tokenizer)
    batches = _take(loader, 8)  # 32 decodable samples per epoch: one epoch and then some
    assert all(b["pixel_values"].shape == (4, 3, 24, 24) for b in batches)
    keys = [k for b in batches for k in b["keys"]]
    assert "badimage0" not in keys and "emptytext" not in keys
    assert loader.corrupt_counts() == {"bad_image": 1, "missing_caption": 1}
    assert batches[0]["pixel_values"].min() >= -1 and batches[0]["pixel_values"].max() <= 1
    assert batches[0]["input_ids"][:, 0].eq(tokenizer.cls_token_id).all()


def test_epochs_cover_every_sample_once_then_reshuffle(world, tokenizer):
    _, paths = world
    batches = _take(data.Loader(_config(paths, shuffle_buffer=100), tokenizer), 14)
    keys = [k for b in batches for k in b["keys"]]
    first, second = keys[:30], keys[30:56]
    assert len(set(first)) == 30  # one pass: every good sample exactly once
    assert first[:26] != second  # the next epoch comes in another order


def test_resumed_stream_continues_exactly_with_workers(world, tokenizer):
    _, paths = world
    cfg = _config([p for p in paths] * 2, workers=2)  # 6 "shards" so each of 2 workers has 3
    loader = data.Loader(cfg, tokenizer)
    full = _take(loader, 7)
    loader = data.Loader(cfg, tokenizer)
    _take(loader, 3)
    state = data.StreamState.from_dict(loader.state().to_dict())  # through JSON-able form, as in a checkpoint
    resumed = _take(data.Loader(cfg, tokenizer, state), 4)
    for a, b in zip(full[3:], resumed):
        assert a["keys"] == b["keys"]
        assert torch.equal(a["pixel_values"], b["pixel_values"])  # same augmentation too


def test_too_few_shards_for_the_readers_is_a_clear_error_and_resampling_fixes_it(world, tokenizer):
    _, paths = world
    with pytest.raises(data.DataError, match="--resampled"):
        data.Loader(_config(paths[:1], workers=2, world_size=1), tokenizer)
    with pytest.raises(data.DataError, match="--resampled"):
        data.check_consumers(_config(paths, workers=2, world_size=2, rank=1))
    batches = _take(data.Loader(_config(paths[:1], workers=2, resampled=True), tokenizer), 6)
    assert len(batches) == 6  # both workers draw from the one shard, forever


def test_all_corrupt_data_raises_instead_of_hanging(tmp_path, tokenizer):
    from aligndata.shards.writer import write_shard

    write_shard(str(tmp_path), 0, [Sample(f"k{i}", b"junk", "jpg", "a red circle", {}) for i in range(3)])
    with pytest.raises(data.DataError, match="no decodable sample"):
        _take(data.Loader(_config([str(tmp_path / "00000.tar")]), tokenizer), 1)


def test_truncated_shard_is_skipped_not_fatal(world, tmp_path, tokenizer):
    _, paths = world
    raw = open(paths[0], "rb").read()
    broken = tmp_path / "00009.tar"
    broken.write_bytes(raw[: len(raw) // 2 + 100])
    loader = data.Loader(_config([paths[2], str(broken)], shuffle_buffer=0), tokenizer)
    keys = [k for b in _take(loader, 4) for k in b["keys"]]
    assert len(keys) == 16
    assert loader.corrupt_counts().get("bad_shard", 0) >= 1


def test_class_samples_get_prompts_and_labels(tmp_path, tokenizer):
    paths = synthetic.write_world(str(tmp_path), shards=1, per_shard=8, seed=1, with_classes=True)
    names = synthetic.class_names()
    batch = _take(data.Loader(_config(paths, classnames=names, templates=("a photo of a {}.",)), tokenizer), 1)[0]
    assert all(t.startswith("a photo of a ") for t in batch["texts"])
    assert all(0 <= int(label) < len(names) for label in batch["labels"])
    assert [names[int(label)] for label in batch["labels"]] == [t[len("a photo of a "):-1] for t in batch["texts"]]


def test_eval_transform_is_deterministic_center_crop():
    img = Image.new("RGB", (50, 30), (255, 0, 0))
    t = transforms.eval_image(img, 16, 20)
    assert t.shape == (3, 16, 16)
    assert torch.allclose(t[0], torch.ones(16, 16)) and torch.allclose(t[1], -torch.ones(16, 16))
    with pytest.raises(transforms.BadImage):
        transforms.decode(b"\x89PNG\r\n\x1a\n broken")
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buffer, format="PNG")
    assert transforms.decode(buffer.getvalue()).size == (2, 2)


# ---------------------------------------------------------------------------------------------- optimizers


def test_lamb_step_matches_the_formula():
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))  # ||w|| = 5
    w.grad = torch.tensor([[1.0, -2.0]])
    opt = optim.Lamb([{"params": [w], "weight_decay": 0.1, "adapt": True}], lr=0.01, eps=1e-6)
    opt.step()
    m_hat = torch.tensor([[1.0, -2.0]])  # bias-corrected first step: m_hat = g, v_hat = g^2
    update = m_hat / (m_hat.abs() + 1e-6) + 0.1 * torch.tensor([[3.0, 4.0]])
    trust = 5.0 / update.norm()
    expected = torch.tensor([[3.0, 4.0]]) - 0.01 * trust * update
    assert torch.allclose(w.detach(), expected, atol=1e-6)


def test_lamb_zero_weights_use_trust_one_and_no_decay_group_skips_adaptation():
    w = torch.nn.Parameter(torch.zeros(3))
    w.grad = torch.ones(3)
    opt = optim.Lamb([{"params": [w], "weight_decay": 0.0, "adapt": True}], lr=0.1)
    opt.step()
    assert torch.allclose(w.detach(), torch.full((3,), -0.1), atol=1e-5)


def test_parameter_groups_exclude_bias_norm_and_temperature():
    from aligndata.models.presets import build_model

    model = build_model("tiny", vocab_size=50, image_size=32)
    decay, plain = optim.parameter_groups(model, 1e-5)
    decay_ids = {id(p) for p in decay["params"]}
    assert id(model.temperature) not in decay_ids
    assert all(p.ndim >= 2 for p in decay["params"])
    assert plain["weight_decay"] == 0.0 and not plain["adapt"]


def test_warmup_then_linear_decay():
    values = [optim.warmup_linear(s, 4, 10) for s in range(11)]
    assert values[:4] == [0.25, 0.5, 0.75, 1.0]
    assert values[4] == 1.0 and values[10] == 0.0
    assert all(a >= b for a, b in zip(values[3:], values[4:]))
    assert optim.default_warmup(1_000_000) == 10_000 and optim.default_warmup(50) == 5
    assert math.isclose(optim.warmup_linear(7, 4, 10), 3 / 6)


def test_image_cache_gives_identical_batches_and_decodes_each_image_once(world, tokenizer, monkeypatch):
    _, paths = world
    plain = _take(data.Loader(_config(paths), tokenizer), 20)  # 80 samples: over two epochs of 30
    decodes = []
    original = transforms.decode
    monkeypatch.setattr(transforms, "decode", lambda *a, **k: decodes.append(1) or original(*a, **k))
    loader = data.Loader(_config(paths, cache_images=True), tokenizer)
    cached = _take(loader, 20)
    for a, b in zip(plain, cached):
        assert a["keys"] == b["keys"] and torch.equal(a["pixel_values"], b["pixel_values"])
    assert len(loader.dataset.decode.cache) == 30
    # each good image decoded once; the corrupt one again every time it comes round (it is never cached)
    assert len(decodes) == 30 + loader.corrupt_counts()["bad_image"] and loader.corrupt_counts()["bad_image"] >= 2


def _hostile_copy(source, target):
    """``source``'s members with a '../escape.txt' member, a symlink and a hard link mixed in among them."""
    import tarfile

    with tarfile.open(source) as src, tarfile.open(target, "w") as out:
        members = src.getmembers()
        for i, member in enumerate(members):
            if i == 3:
                escape = tarfile.TarInfo("../escape.txt")
                escape.size = 6
                out.addfile(escape, io.BytesIO(b"escape"))
                link = tarfile.TarInfo(f"{member.name.split('.')[0]}.txt")
                link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
                out.addfile(link)
            if i == 7:
                hard = tarfile.TarInfo("zz.jpg")
                hard.type, hard.linkname = tarfile.LNKTYPE, "../../outside.jpg"
                out.addfile(hard)
            out.addfile(member, src.extractfile(member))
    return str(target)


def test_reader_refuses_unsafe_members_and_reports_broken_shards(world, tmp_path):
    from aligndata.shards import reader

    _, paths = world
    hostile = _hostile_copy(paths[0], tmp_path / "00000.tar")
    truncated = tmp_path / "00001.tar"
    truncated.write_bytes(open(paths[2], "rb").read()[:5000])
    errors = []
    samples = list(reader.iter_shards([hostile, str(tmp_path / "missing.tar"), f"file://{truncated}"],
                                      on_error=lambda url, exn: errors.append((url, exn))))
    clean = list(reader.iter_shards([paths[0]], on_error=lambda url, exn: errors.append((url, exn))))
    hostile_samples = [s for s in samples if s.shard == hostile]
    assert [(s.key, s.files) for s in hostile_samples] == [(s.key, s.files) for s in clean]  # good samples intact
    problems = [(url, exn) for url, exn in errors if url == hostile]
    assert all(isinstance(e, reader.ShardProblem) and not e.fatal for _, e in problems)
    messages = " | ".join(str(e) for _, e in problems)
    assert "'../escape.txt' has a '..' component" in messages
    assert "symbolic link to '/etc/passwd'" in messages and "hard link to '../../outside.jpg'" in messages
    missing = [e for url, e in errors if url.endswith("missing.tar")]
    assert len(missing) == 1 and isinstance(missing[0], OSError)
    cut = [e for url, e in errors if url == f"file://{truncated}"]
    assert any(isinstance(e, reader.ShardProblem) and e.fatal and "truncated" in str(e) for e in cut)
    assert all(s.shard == f"file://{truncated}" for s in samples[len(hostile_samples):])


def test_training_skips_unsafe_members_and_still_loads_the_good_samples(world, tmp_path, tokenizer, caplog):
    _, paths = world
    hostile = _hostile_copy(paths[0], tmp_path / "00000.tar")
    loader = data.Loader(_config([hostile], shuffle_buffer=0), tokenizer)
    with caplog.at_level("WARNING", logger="aligndata.models.data"):
        batches = _take(loader, 5)  # 10 samples per pass: two passes
    clean = _take(data.Loader(_config([paths[0]], shuffle_buffer=0), tokenizer), 5)
    assert [b["keys"] for b in batches] == [b["keys"] for b in clean]
    assert all(torch.equal(a["pixel_values"], b["pixel_values"]) for a, b in zip(batches, clean))
    assert loader.corrupt_counts() == {"bad_member": 6}  # 3 unsafe members, each pass
    assert "'..' component" in caplog.text and "symbolic link" in caplog.text


def test_the_trainer_imports_neither_beam_nor_layers_above_it():
    import json
    import subprocess
    import sys

    code = ("import json, sys, aligndata.models.train, aligndata.models.data, aligndata.models.evaluate, "
            "aligndata.models.tokenizer; print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('apache_beam', 'aligndata'))))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                       check=True).stdout)
    allowed = ("aligndata.models", "aligndata.filters", "aligndata.io", "aligndata.shards", "aligndata.progress_bar")
    assert [m for m in loaded if m != "aligndata" and not m.startswith(allowed)] == []

"""Several shard sets in one training stream (UniCL: image-text + image-label): exact rates, TargetM labels,
exact resume with workers, and `aligndata train --data A --data B --data-weights` resuming to the same weights."""

from __future__ import annotations

import itertools
import json
import os
from collections import Counter

import pytest
import torch

from aligndata.models import data, synthetic
from aligndata.models.losses import caption_label
from aligndata.models.tokenizer import train_tokenizer
from aligndata.shards.writer import Sample, write_shard, write_sizes

PROMPT = "a photo of a {}."


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    text = synthetic.write_world(str(root / "text"), shards=4, per_shard=12, seed=1)
    labelled = synthetic.write_world(str(root / "labels"), shards=2, per_shard=16, seed=2, with_classes=True)
    world = synthetic.class_names()
    (root / "labels" / "classnames.txt").write_text("\n".join(world) + "\n")  # beside the shards, as shards-from-labels
    # a caption set whose one caption is exactly a class prompt ("a photo of a red circle.")
    clash = root / "clash"
    sample = synthetic.make_samples(1, seed=9)[0]
    clashing = [Sample(f"c{i}", sample.image, "jpg", PROMPT.format(world[0]), {}) for i in range(8)]
    write_shard(str(clash), 0, clashing)
    write_sizes(str(clash), {"00000.tar": 8})
    tok = train_tokenizer([p.format(c=c, s=s) for p in synthetic.PHRASES for c in synthetic.COLOURS
                           for s in synthetic.SHAPES] * 3 + [PROMPT.format(n) for n in world] * 3,
                          vocab_size=150, min_frequency=1)
    return {"root": root, "text": text, "labelled": labelled, "names": world, "clash": str(clash), "tok": tok}


def _sources(sets, weights=(3.0, 1.0), clash=False):
    text = data.Source(sets["text"] if not clash else [sets["clash"] + "/00000.tar"], weights[0], name="text")
    labels = data.Source(sets["labelled"], weights[1], sets["names"], name="labels")
    sources = [text, labels]
    data.joint_classes(sources)
    return sources


def _config(sources, **kw):
    base = dict(urls=sources[0].urls, batch_size=8, image_size=24, resize_size=28, seed=4, shuffle_buffer=8,
                workers=0, templates=(PROMPT,), sources=sources)
    base.update(kw)
    return data.DataConfig(**base)


def _take(loader, n):
    return list(itertools.islice(loader, n))


def _origin(key: str, sets) -> str:
    return "labels" if key in _keys(sets["labelled"]) else "text"


_KEYS: dict = {}


def _keys(paths):
    if tuple(paths) not in _KEYS:
        from aligndata.shards.reader import iter_shards

        _KEYS[tuple(paths)] = {s.key for s in iter_shards(paths)}
    return _KEYS[tuple(paths)]


def test_next_source_keeps_every_prefix_within_one_sample_of_its_share():
    weights, taken = [0.7, 0.3], [0, 0]
    for n in range(1, 1001):
        taken[data.next_source(weights, taken)] += 1
        assert abs(taken[0] - 0.7 * n) < 1 and abs(taken[1] - 0.3 * n) < 1
    assert data.next_source([1, 1, 2], [0, 0, 0]) == 2 and data.next_source([1.0], [5]) == 0


def test_each_batch_mixes_the_sets_at_their_weights_with_targetm_labels(sets):
    batches = _take(data.Loader(_config(_sources(sets)), sets["tok"]), 10)  # past one epoch of the text set
    names = sets["names"]
    for batch in batches:
        origins = Counter(_origin(k, sets) for k in batch["keys"])
        assert origins == {"text": 6, "labels": 2}  # 3:1 of 8, exactly, in every batch
        for key, text, label in zip(batch["keys"], batch["texts"], batch["labels"].tolist()):
            if _origin(key, sets) == "labels":
                assert 0 <= label < len(names) and text == PROMPT.format(names[label])  # the class keeps its id
            else:
                assert label == caption_label(text) < 0  # each distinct caption its own label
    text_keys = [k for b in batches for k in b["keys"] if _origin(k, sets) == "text"]
    assert len(set(text_keys[:48])) == 48  # the text set's epoch: each of its 48 samples once


def test_a_caption_equal_to_a_class_prompt_is_not_that_class(sets):
    batch = _take(data.Loader(_config(_sources(sets, (1.0, 1.0), clash=True), batch_size=16), sets["tok"]), 1)[0]
    prompt = PROMPT.format(sets["names"][0])
    caption_labels = {label for key, label in zip(batch["keys"], batch["labels"].tolist()) if key.startswith("c")}
    assert caption_labels == {caption_label(prompt)}  # 8 identical captions share one label ...
    assert 0 not in caption_labels  # ... which is not class 0's, though the text is class 0's prompt


def test_sets_sharing_class_names_share_labels_and_others_do_not():
    a = data.Source(["x"], 1.0, ["red circle", "blue square"])
    b = data.Source(["y"], 1.0, ["tench", "red circle"])
    c = data.Source(["z"], 1.0, None)
    assert data.joint_classes([a, b, c]) == ["red circle", "blue square", "tench"]
    assert a.class_labels == [0, 1] and b.class_labels == [2, 0] and c.class_labels is None


def test_mixed_stream_resumes_exactly_with_workers(sets):
    sources = _sources(sets, (0.7, 0.3))
    cfg = _config(sources, workers=2, shuffle_buffer=6)
    full = _take(data.Loader(cfg, sets["tok"]), 9)
    loader = data.Loader(cfg, sets["tok"])
    _take(loader, 4)
    state = data.StreamState.from_dict(json.loads(json.dumps(loader.state().to_dict())))  # as a checkpoint holds it
    assert all(len(p.sources) == 2 and sum(p.taken) % 8 == 0 for p in state.positions.values())
    resumed = _take(data.Loader(cfg, sets["tok"], state), 5)
    for a, b in zip(full[4:], resumed):
        assert a["keys"] == b["keys"] and a["texts"] == b["texts"]
        assert torch.equal(a["labels"], b["labels"])
        assert torch.equal(a["pixel_values"], b["pixel_values"])  # same augmentation too


def test_a_single_set_streams_as_before_and_old_checkpoints_resume():
    state = data.StreamState.from_dict({"next_worker": 1, "positions": {"0": [2, 17], "1": [1, 5]}})
    assert state.positions[0].sources == [data.Position(2, 17)] and state.positions[0].taken == []
    assert state.next_worker == 1


def _weights(run):
    from safetensors.torch import load_file

    return load_file(os.path.join(run, "final", "model.safetensors"))


@pytest.mark.e2e
def test_train_on_two_sets_resumes_to_the_same_weights(sets, tmp_path):
    from aligndata.commands import models as commands

    tok = tmp_path / "tok"
    sets["tok"].save_pretrained(str(tok))
    args = ["--data", str(sets["root"] / "text"), "--data", str(sets["root"] / "labels"), "--data-weights", "0.7,0.3",
            "--loss", "unicl", "--tokenizer", str(tok), "--steps", "6", "--batch-size", "8", "--save-every", "3",
            "--log-every", "1", "--shuffle-buffer", "16", "--preset", "tiny", "--image-size", "32",
            "--resize-size", "36", "--workers", "0", "--no-progress"]
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    assert commands.main(["train", "--output", straight, *args]) == 0
    assert commands.main(["train", "--output", split, "--stop-after", "4", *args]) == 0
    assert commands.main(["train", "--output", split, "--resume", *args]) == 0
    a, b = _weights(straight), _weights(split)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = [json.loads(line)["loss"] for line in open(os.path.join(split, "metrics.jsonl"))]
    assert losses == [json.loads(line)["loss"] for line in open(os.path.join(straight, "metrics.jsonl"))]
    config = json.loads(open(os.path.join(straight, "train_config.json")).read())
    described = config["data_sets"]
    assert [d["share"] for d in described] == [0.7, 0.3] and described[0]["classnames"] is None
    assert described[1]["classnames"].endswith("classnames.txt") and described[1]["classes"] == 8
    # evaluate finds the labelled set's classnames.txt too
    out = tmp_path / "eval.json"
    assert commands.main(["evaluate", "--model", os.path.join(straight, "final"), "--data", str(sets["root"] / "labels"),
                          "--device", "cpu", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["zeroshot"]["classes"] == 8


def test_train_refuses_mismatched_weights_and_epochs_of_a_mix(sets, tmp_path, capsys):
    from aligndata.commands import models as commands

    base = ["train", "--data", str(sets["root"] / "text"), "--data", str(sets["root"] / "labels"),
            "--output", str(tmp_path / "r"), "--workers", "0", "--no-progress"]
    assert commands.main([*base, "--steps", "2", "--data-weights", "1,2,3"]) == 2
    assert "3 value(s) for 2 --data set(s)" in capsys.readouterr().err
    assert commands.main([*base, "--epochs", "1"]) == 2
    assert "give --steps" in capsys.readouterr().err

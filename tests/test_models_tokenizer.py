"""The WordPiece tokenizer: same captions, same vocabulary and ids, in every run (tokenizers#1794 worked around)."""

from __future__ import annotations

import random

from aligndata.demo.world import caption, sample_scene
from aligndata.models.tokenizer import SPECIAL_TOKENS, load_tokenizer, train_tokenizer


def _captions(n: int = 300) -> list[str]:
    rng = random.Random(7)
    return [caption(sample_scene(rng), rng) for _ in range(n)]


def test_training_is_deterministic():
    # Before the workaround, 8 trainings on demo captions gave 8 different vocabularies (ids and pieces).
    texts = _captions()
    vocabs = {tuple(sorted(train_tokenizer(texts, vocab_size=400).get_vocab().items())) for _ in range(6)}
    assert len(vocabs) == 1


def test_vocabulary_size_specials_and_round_trip(tmp_path):
    texts = _captions()
    tok = train_tokenizer(texts, vocab_size=150)
    vocab = tok.get_vocab()
    assert len(vocab) == 150
    assert [vocab[t] for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert sorted(vocab.values()) == list(range(150))
    ids = tok("Three striped red CIRCLES on the left, dotted")["input_ids"]  # "," is unseen: the only [UNK]
    assert ids[0] == vocab["[CLS]"] and ids[-1] == vocab["[SEP]"]
    assert ids.count(vocab["[UNK]"]) == 1
    assert tok.decode(ids, skip_special_tokens=True) == "three striped red circles on the left dotted"
    tok.save_pretrained(str(tmp_path))
    again = load_tokenizer(str(tmp_path))
    assert again("a blue star")["input_ids"] == tok("a blue star")["input_ids"]


def test_no_captions_is_a_clear_error():
    import pytest

    with pytest.raises(ValueError, match="no captions"):
        train_tokenizer([], vocab_size=100)


def test_a_one_shot_iterator_and_a_re_iterable_give_the_same_vocabulary():
    texts = _captions(120)

    class Twice:  # read on every iteration, like ShardCaptions over tars
        reads = 0

        def __iter__(self):
            Twice.reads += 1
            return iter(texts)

    from_iterator = train_tokenizer(iter(texts), vocab_size=120).get_vocab()
    assert train_tokenizer(Twice(), vocab_size=120).get_vocab() == from_iterator
    assert Twice.reads == 2  # one pass for the continuation pieces, one for training: nothing held in a list

"""Tests for aligndata.filters.frequency: hashing, the allowlist threshold, capped distinct counting."""

from __future__ import annotations

import os
import pickle
import random
import subprocess
import sys
from collections import Counter
from hashlib import blake2b

import pytest
from helpers import REAL

from aligndata.filters import reasons
from aligndata.filters.frequency import (
    CappedDistinct,
    allowlist_threshold,
    capped_add,
    capped_count,
    capped_create,
    capped_merge,
    distinct_ngram_hashes,
    hash64,
    ngram_hashes,
    rare_token_reason,
    shared_text_reason,
    too_many_texts_reason,
)
from aligndata.filters.text import normalize_text, tokenize, word_ngrams

LAION = REAL / "captions" / "laion_alt_10k.parquet"


# ------------------------------------------------------------------------------------------------ hashing


def test_hash64_is_masked_blake2b() -> None:
    for s in ["", "a", "very good", "caf\u00e9", "\U0001F600"]:
        digest = int.from_bytes(blake2b(s.encode("utf-8"), digest_size=8).digest(), "little")
        assert hash64(s) == digest & ((1 << 63) - 1)
        assert 0 <= hash64(s) < 2**63


def test_hash64_known_values_are_stable() -> None:
    # fixed values: a change here would silently invalidate every count computed by an earlier version
    assert hash64("hello") == 9022087748821825191
    assert hash64("the red car") == 6979732464649183430
    assert hash64("caf\u00e9") == 7194379672080250711
    assert hash64("hello") != hash64("Hello")


def test_hash64_same_in_another_process_with_another_hash_seed() -> None:
    words = ["the", "red car", "\u00e9t\u00e9", "\u092d\u093e\u0930\u0924"]
    code = "import sys; from aligndata.filters.frequency import hash64; print([hash64(w) for w in sys.argv[1:]])"
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code, *words], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str([hash64(w) for w in words])


def test_ngram_hashes_keep_occurrences_and_order() -> None:
    tokens = ["very", "very", "good"]
    assert ngram_hashes(tokens) == [hash64(g) for g in word_ngrams(tokens)]
    assert len(ngram_hashes(tokens)) == 5  # very, very, good, "very very", "very good"
    assert distinct_ngram_hashes(tokens) == {hash64(g) for g in ["very", "good", "very very", "very good"]}
    assert ngram_hashes([]) == [] and distinct_ngram_hashes([]) == set()


# --------------------------------------------------------------------------------------------- allowlist

PAPER_HIST = {5: 2, 3: 4, 1: 10}


@pytest.mark.parametrize(
    ("vocab", "expected"),
    [
        (0, 6),  # nothing fits: max + 1
        (1, 6),  # the two n-grams of count 5 tie: both or neither
        (2, 5),
        (3, 5),  # the tie at count 3 is excluded: 2 + 4 = 6 > 3
        (5, 5),
        (6, 3),
        (15, 3),  # the 10 n-grams of count 1 would make 16
        (16, 1),  # everything fits
        (10**9, 1),
    ],
)
def test_allowlist_threshold_boundaries(vocab: int, expected: int) -> None:
    assert allowlist_threshold(PAPER_HIST, vocab) == expected


def test_allowlist_threshold_edge_inputs() -> None:
    assert allowlist_threshold({}, 0) == 1
    assert allowlist_threshold({}, 5) == 1
    assert allowlist_threshold({7: 0, 2: 3}, 3) == 1  # zero entries are ignored
    assert allowlist_threshold({7: 0, 2: 3}, 2) == 3
    assert allowlist_threshold({1: 1}, 0) == 2
    with pytest.raises(ValueError, match="vocab_size"):
        allowlist_threshold(PAPER_HIST, -1)
    with pytest.raises(TypeError, match="vocab_size"):
        allowlist_threshold(PAPER_HIST, 2.5)
    with pytest.raises(ValueError, match="counts must be >= 1"):
        allowlist_threshold({0: 3}, 1)
    with pytest.raises(ValueError, match="values must be >= 0"):
        allowlist_threshold({2: -1}, 1)


def _brute_force_allowlist(counts: dict[str, int], vocab: int) -> set[str]:
    """An n-gram is in iff at most `vocab` n-grams have a count >= its own (ties never split)."""
    return {g for g, c in counts.items() if sum(1 for d in counts.values() if d >= c) <= vocab}


def _random_corpus(rng: random.Random) -> list[list[str]]:
    vocab = [f"w{i}" for i in range(rng.randint(1, 40))]
    weights = [1 / (i + 1) for i in range(len(vocab))]  # Zipf-like, so ties and long tails both occur
    return [rng.choices(vocab, weights, k=rng.randint(0, 12)) for _ in range(rng.randint(0, 60))]


def test_allowlist_threshold_matches_brute_force_ranking() -> None:
    rng = random.Random(20210601)
    for _ in range(400):
        counts = Counter(g for row in _random_corpus(rng) for g in word_ngrams(row))
        histogram = Counter(counts.values())
        for vocab in {0, 1, 2, rng.randint(0, len(counts) + 2), len(counts) - 1, len(counts), len(counts) + 1}:
            if vocab < 0:
                continue
            threshold = allowlist_threshold(histogram, vocab)
            allowed = {g for g, c in counts.items() if c >= threshold}
            expected = _brute_force_allowlist(counts, vocab)
            assert allowed == expected, (dict(histogram), vocab, threshold)
            assert len(allowed) <= vocab or not counts
            if counts and len(counts) > vocab:
                # c* is the lowest count that is in, or max + 1 when nothing is
                lowest_in = min((counts[g] for g in allowed), default=max(counts.values()) + 1)
                assert threshold == lowest_in


def test_rare_token_rule_end_to_end_on_real_laion() -> None:
    """Count n-gram hashes over real alt-texts, derive c*, and check the per-row rule against a string ranking."""
    if not LAION.exists():
        pytest.skip(f"real data not present: {LAION}")
    import pyarrow.parquet as pq

    rows = [tokenize(normalize_text(t)) for t in pq.read_table(LAION, columns=["TEXT"]).column("TEXT").to_pylist() if t]
    hash_counts = Counter(h for row in rows for h in ngram_hashes(row))
    string_counts = Counter(g for row in rows for g in word_ngrams(row))
    assert sorted(hash_counts.values()) == sorted(string_counts.values())  # no collision on 10k rows

    vocab = 5000
    threshold = allowlist_threshold(Counter(hash_counts.values()), vocab)
    allow = _top_without_splitting_ties(string_counts, vocab)
    assert {g for g, c in string_counts.items() if c >= threshold} == allow
    rejected = 0
    for row in rows:
        if not row:
            continue
        min_count = min(hash_counts[h] for h in distinct_ngram_hashes(row))
        rule = rare_token_reason(min_count, threshold) is not None
        assert rule == any(g not in allow for g in word_ngrams(row))
        rejected += rule
    assert 0 < rejected < len(rows)


def _top_without_splitting_ties(counts: Counter, vocab: int) -> set[str]:
    """Rank by count, then take whole tie groups while they fit."""
    by_count: dict[int, list[str]] = {}
    for g, c in counts.items():
        by_count.setdefault(c, []).append(g)
    allowed: set[str] = set()
    for c in sorted(by_count, reverse=True):
        if len(allowed) + len(by_count[c]) > vocab:
            break
        allowed.update(by_count[c])
    return allowed


# ------------------------------------------------------------------------------------------- row rules


def test_rare_token_reason_boundary() -> None:
    assert rare_token_reason(2, 3) == reasons.TEXT_RARE_TOKEN
    assert rare_token_reason(3, 3) is None
    assert rare_token_reason(100, 1) is None
    assert rare_token_reason(7, 8) == reasons.TEXT_RARE_TOKEN  # c* = max + 1: even the top n-grams fail


@pytest.mark.parametrize(("n", "expected"), [(1, None), (10, None), (11, reasons.TEXT_SHARED_BY_TOO_MANY_IMAGES)])
def test_shared_text_reason_boundary(n: int, expected: str | None) -> None:
    assert shared_text_reason(n) == expected


@pytest.mark.parametrize(("n", "expected"), [(1, None), (1000, None), (1001, reasons.IMAGE_TOO_MANY_TEXTS)])
def test_too_many_texts_reason_boundary(n: int, expected: str | None) -> None:
    assert too_many_texts_reason(n) == expected


def test_rule_limits_are_configurable() -> None:
    assert shared_text_reason(3, max_images_per_text=2) == reasons.TEXT_SHARED_BY_TOO_MANY_IMAGES
    assert shared_text_reason(2, max_images_per_text=2) is None
    assert too_many_texts_reason(6, max_texts_per_image=5) == reasons.IMAGE_TOO_MANY_TEXTS
    assert too_many_texts_reason(5, max_texts_per_image=5) is None


# ------------------------------------------------------------------------------------ capped distinct


@pytest.mark.parametrize(
    ("limit", "distinct", "exceeds"),
    [(10, 10, False), (10, 11, True), (1000, 1000, False), (1000, 1001, True), (0, 0, False), (0, 1, True)],
)
def test_capped_distinct_boundaries(limit: int, distinct: int, exceeds: bool) -> None:
    counter = CappedDistinct(limit)
    for i in range(distinct):
        counter.add(hash64(f"url-{i}"))
        counter.add(hash64(f"url-{i}"))  # duplicates never count
    assert counter.exceeds is exceeds
    assert counter.count == min(distinct, limit + 1)


@pytest.mark.parametrize(("distinct", "flagged"), [(10, False), (11, True), (10_000, True)])
def test_capped_count_drives_shared_text_rule(distinct: int, flagged: bool) -> None:
    acc = capped_create()
    for i in range(distinct):
        capped_add(acc, hash64(f"https://img.example/{i}.jpg"), 10)
    assert (shared_text_reason(capped_count(acc)) is not None) is flagged


@pytest.mark.parametrize(("distinct", "flagged"), [(1000, False), (1001, True), (5000, True)])
def test_capped_count_drives_too_many_texts_rule(distinct: int, flagged: bool) -> None:
    acc = capped_create()
    for i in range(distinct):
        capped_add(acc, hash64(f"caption number {i}"), 1000)
    assert capped_count(acc) <= 1001
    assert (too_many_texts_reason(capped_count(acc)) is not None) is flagged


def test_capped_distinct_stores_at_most_limit_plus_one() -> None:
    counter = CappedDistinct(5, range(10_000))
    assert counter.count == 6 and counter.exceeds
    assert len(pickle.dumps(counter)) < 200  # small: 6 items, not 10,000


def _split_randomly(items: list[int], parts: int, rng: random.Random) -> list[list[int]]:
    chunks: list[list[int]] = [[] for _ in range(parts)]
    for item in items:
        chunks[rng.randrange(parts)].append(item)
    return chunks


def test_capped_distinct_merge_is_exact_associative_and_commutative() -> None:
    rng = random.Random(7)
    for _ in range(300):
        limit = rng.randint(0, 12)
        items = [rng.randint(0, 25) for _ in range(rng.randint(0, 60))]
        a, b, c = (CappedDistinct(limit, chunk) for chunk in _split_randomly(items, 3, rng))
        left = pickle.loads(pickle.dumps(a)).merge(b).merge(c)  # (a + b) + c
        right = pickle.loads(pickle.dumps(a)).merge(pickle.loads(pickle.dumps(b)).merge(c))  # a + (b + c)
        swapped = pickle.loads(pickle.dumps(c)).merge(a).merge(b)
        truth = min(len(set(items)), limit + 1)
        for merged in (left, right, swapped):
            assert merged.count == truth
            assert merged.exceeds is (len(set(items)) > limit)


def test_capped_distinct_limit_checks_and_pickle() -> None:
    with pytest.raises(ValueError, match="limit"):
        CappedDistinct(-1)
    with pytest.raises(ValueError, match="limit"):
        CappedDistinct(True)
    with pytest.raises(ValueError, match="limit 3 into limit 2"):
        CappedDistinct(2).merge(CappedDistinct(3))
    original = CappedDistinct(3, [1, 2])
    clone = pickle.loads(pickle.dumps(original))
    assert clone == original and clone.limit == 3 and clone.count == 2
    clone.add(3)
    assert original.count == 2  # independent copy
    assert "limit=3" in repr(original)


def test_capped_functions_match_the_class_and_do_not_mutate_merge_inputs() -> None:
    rng = random.Random(11)
    for _ in range(300):
        limit = rng.randint(0, 10)
        items = [rng.randint(0, 20) for _ in range(rng.randint(0, 50))]
        accs = []
        for chunk in _split_randomly(items, rng.randint(1, 4), rng):
            acc = capped_create()
            for item in chunk:
                acc = capped_add(acc, item, limit)
            assert len(acc) <= limit + 1
            accs.append(acc)
        snapshot = [set(acc) for acc in accs]
        merged = capped_merge(accs, limit)
        assert accs == snapshot
        assert capped_count(merged) == min(len(set(items)), limit + 1)
        assert capped_count(merged) == CappedDistinct(limit, items).count
        # merging in another grouping gives the same count
        regrouped = capped_merge([capped_merge(accs[:1], limit), capped_merge(accs[1:], limit)], limit)
        assert capped_count(regrouped) == capped_count(merged)
    assert capped_merge([], 3) == set()

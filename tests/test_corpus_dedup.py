"""The pure pieces of ``aligndata dedup`` (aligndata/filters/corpus_dedup.py) and the job's combiners, without a
pipeline: banding, bucket verification, the union-find, salts, the keep rule."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from aligndata.filters import corpus_dedup as cd
from aligndata.pipeline.dedup_job import BucketMembers, CaptionVotes, VertexStats


def flip(value: int, k: int, rng: random.Random) -> int:
    for bit in rng.sample(range(64), k):
        value ^= 1 << bit
    return value


@pytest.fixture(scope="module")
def hashes() -> np.ndarray:
    """Random 64-bit values plus near copies of some at every distance 0..9 (both sides of each T)."""
    rng = random.Random(3)
    values = [rng.getrandbits(64) for _ in range(400)]
    values += [flip(base, k, rng) for base in values[:50] for k in range(10)]
    return np.unique(np.array(values, dtype=np.uint64))


def reference_roots(values: np.ndarray, radius: int) -> list[int]:
    """Components by comparing every pair, in plain Python: the smallest index of each member's component."""
    ints = [int(v) for v in values]
    parent = list(range(len(ints)))

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for i, j in itertools.combinations(range(len(ints)), 2):
        if (ints[i] ^ ints[j]).bit_count() <= radius:
            a, b = find(i), find(j)
            parent[max(a, b)] = min(a, b)
    return [find(i) for i in range(len(ints))]


@pytest.mark.parametrize("radius", [1, 2, 4, 6, 8])
def test_every_pair_within_t_shares_a_band_bucket(hashes, radius):
    """The pigeonhole: T + 1 bands, so two hashes within T agree exactly on at least one."""
    buckets = {}
    for key, members in cd.band_batches(hashes, cd.band_ranges(radius)):
        for value in members.tolist():
            buckets.setdefault(value, set()).add(key)
    ints = hashes.tolist()
    near = [(a, b) for a, b in itertools.combinations(ints, 2) if (a ^ b).bit_count() <= radius]
    assert near and all(buckets[a] & buckets[b] for a, b in near)
    assert sum(len(k) for k in buckets.values()) == len(ints) * (radius + 1)  # each value once a band


@pytest.mark.parametrize("method", ["brute", "index"])
@pytest.mark.parametrize("radius", [0, 2, 4, 6])
def test_bucket_components_equal_all_pairs(hashes, method, radius):
    roots, pairs = cd.near_components(hashes, radius, method=method)
    assert roots.tolist() == reference_roots(hashes, radius)
    ints = hashes.tolist()
    assert pairs == sum((a ^ b).bit_count() <= radius for a, b in itertools.combinations(ints, 2))


@pytest.mark.parametrize("radius", [2, 4])
def test_components_inside_a_band_bucket_search_only_the_other_bits(hashes, radius):
    ranges = cd.band_ranges(radius)
    checked = 0
    for (band, _), members in cd.band_batches(hashes, ranges):
        if len(members) < 3:
            continue
        expected = reference_roots(members, radius)
        for method in ("brute", "index", "auto"):  # auto: one matrix for small buckets
            assert cd.near_components(members, radius, ranges[band], method)[0].tolist() == expected
        checked += 1
    assert checked


def test_star_edges_keep_each_component_connected_through_its_smallest_member(hashes):
    roots, _ = cd.near_components(hashes, 4)
    a, b = cd.star_edges(hashes, roots)
    assert len(a) == len(hashes) - len(set(roots.tolist()))  # members minus components
    assert (a < b).all() and set(a.tolist()) <= set(hashes[np.unique(roots)].tolist())


def test_small_buckets_in_plain_python_equal_the_numpy_path(hashes):
    rng = random.Random(5)
    for _ in range(200):
        members = rng.sample(hashes.tolist(), rng.randint(2, cd.SMALL_BUCKET))
        base = members[0]
        members += [flip(base, rng.randint(0, 6), rng) for _ in range(3)]
        values = np.unique(np.array(members, dtype=np.uint64))
        roots, pairs = cd.near_components(values, 4)
        expected = sorted(zip(*(side.tolist() for side in cd.star_edges(values, roots))))
        edges, found = cd.small_bucket_edges(rng.sample(values.tolist(), len(values)), 4)  # any order
        assert (sorted(edges), found) == (expected, pairs)


def test_union_pairs_on_dense_and_chained_graphs():
    rng = np.random.default_rng(0)
    n = 300
    a, b = rng.integers(0, n, 400), rng.integers(0, n, 400)
    chain = np.arange(n - 1)
    for x, y in ((a, b), (chain, chain + 1), (np.zeros(n - 1, dtype=np.int64), np.arange(1, n))):
        parent = np.arange(n)
        cd.union_pairs(parent, x, y)
        cd.compress(parent)
        expected = list(range(n))
        for i, j in zip(x.tolist(), y.tolist()):  # a plain union-find on the same pairs
            ri, rj = expected[i], expected[j]
            while expected[ri] != ri:
                ri = expected[ri]
            while expected[rj] != rj:
                rj = expected[rj]
            expected[max(ri, rj)] = min(ri, rj)
        for i in range(n):
            while expected[expected[i]] != expected[i]:
                expected[i] = expected[expected[i]]
        assert parent.tolist() == expected


def test_a_bucket_keeps_its_smallest_members_whatever_the_order():
    rng = np.random.default_rng(1)
    values = rng.integers(0, 2**63, 500, dtype=np.int64).astype(np.uint64)
    combine = BucketMembers(cap=40)
    results = set()
    for seed in range(3):
        order = np.random.default_rng(seed).permutation(values)
        accs = []
        for chunk in np.array_split(order, 7):  # bundles, combined in a shuffled order
            acc = combine.create_accumulator()
            for piece in np.array_split(chunk, 3):
                acc = combine.add_input(acc, piece.tobytes())
            accs.append(acc)
        random.Random(seed).shuffle(accs)
        count, members = combine.extract_output(combine.merge_accumulators(accs))
        results.add((count, members))
    assert results == {(500, np.sort(values)[:40].tobytes())}


def test_vertex_stats_are_order_free_and_switch_salts_to_a_bitmap():
    combine = VertexStats()
    elements = [(pos, pos % cd.SALTS * 7 % cd.SALTS, b"\x01" * 32) for pos in range(100)]
    forward = combine.add_input(combine.create_accumulator(), elements[0])
    for element in elements[1:]:
        forward = combine.add_input(forward, element)
    halves = [combine.create_accumulator(), combine.create_accumulator()]
    for k, element in enumerate(reversed(elements)):
        halves[k % 2] = combine.add_input(halves[k % 2], element)
    merged = combine.merge_accumulators(halves)
    assert combine.extract_output(forward) == combine.extract_output(merged)
    count, first, uniform, salts = combine.extract_output(merged)
    assert (count, first, uniform) == (100, 0, True) and isinstance(salts, bytes) and len(salts) == cd.SALTS // 8
    assert cd.salts_list(salts) == sorted({s for _, s, _ in elements})
    mixed = combine.add_input(combine.add_input(combine.create_accumulator(), (5, 1, b"a" * 32)), (3, 1, b"b" * 32))
    assert combine.extract_output(mixed)[:3] == (2, 3, False)  # two different sha256s: not one exact group


def test_salts_stay_a_short_tuple_until_many():
    salts = ()
    for salt in (9, 3, 9, 4000):
        salts = cd.salts_add(salts, salt)
    assert salts == (3, 9, 4000)
    many = cd.salts_add(salts, tuple(range(100, 140)))
    assert isinstance(many, bytes) and cd.salts_list(many) == [3, 9] + list(range(100, 140)) + [4000]
    assert cd.salts_list(cd.salts_add(many, (1,))) == [1, 3, 9] + list(range(100, 140)) + [4000]
    assert 0 <= cd.salt_of(b"a" * 32) < cd.SALTS


def test_the_keep_rule_prefers_the_commonest_caption_then_the_smallest_uid():
    votes = CaptionVotes()
    acc = votes.create_accumulator()
    for uid in ("c", "a", "b"):
        acc = votes.add_input(acc, uid)
    assert votes.extract_output(votes.merge_accumulators([acc, votes.add_input(None, "0")])) == (4, "0")
    assert cd.better_vote((3, "b"), (2, "a")) == (3, "b")
    assert cd.better_vote((3, "b"), (3, "a")) == (3, "a")
    assert cd.better_vote(None, (1, "x")) == (1, "x") and cd.better_vote((1, "x"), None) == (1, "x")
    assert cd.caption_key("Blank Image") == cd.caption_key("blank image") != cd.caption_key("blank")


def test_positions_and_parsing():
    assert cd.split_position(cd.position(7, 123)) == (7, 123)
    assert cd.position(1, 0) > cd.position(0, 2**32 - 1)  # shard order first
    with pytest.raises(ValueError):
        cd.position(0, 2**32)
    assert cd.parse_phash("00ff") == 255 and cd.parse_phash("f" * 16) == 2**64 - 1
    assert cd.phash_bytes("1") == b"\0" * 7 + b"\1"
    for bad in ("", "g", "1" * 17, None, "-1", "0x1f", "f_f", " ff", "ff ff"):
        with pytest.raises(ValueError):
            cd.parse_phash(bad)
    assert cd.parse_sha256("ab" * 32) == b"\xab" * 32
    for bad in ("ab", "ab" * 31 + "a ", "zz" * 32, None, "ab" * 33):
        with pytest.raises(ValueError):
            cd.parse_sha256(bad)
    with pytest.raises(ValueError, match="0..16"):
        cd.band_ranges(17)

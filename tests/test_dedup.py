"""Perceptual hashes and the exact multi-index Hamming search (aligndata/filters/dedup.py)."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
from helpers import COCO, needs_coco
from PIL import Image, ImageOps

from aligndata.filters.dedup import (
    EvalHashes,
    HammingIndex,
    HashSpec,
    array_row_to_int,
    brute_force,
    choose_substrings,
    hashes_to_array,
)
from aligndata.filters.image import decode_image, perceptual_hash


def smooth_image(seed: int, size=(256, 192)) -> Image.Image:
    """A photo-like (smooth, distinct) RGB image: random 6x6 colours upsampled."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), "RGB")
    return small.resize(size, Image.Resampling.BICUBIC)


def flip_bits(value: int, bits: int, k: int, rng: random.Random) -> int:
    for b in rng.sample(range(bits), k):
        value ^= 1 << b
    return value


def clustered_hashes(bits: int, n_random: int, rng: random.Random) -> list[int]:
    """Random hashes plus near copies of some of them at every distance 0..12 (exercises the boundaries)."""
    values = [rng.getrandbits(bits) for _ in range(n_random)]
    for base in values[:60]:
        values += [flip_bits(base, bits, k, rng) for k in range(13)]
    return values


# ------------------------------------------------------------------------------------------------- hashing


def test_phash_is_the_pipelines_hash_and_round_trips_through_hex():
    image = smooth_image(1)
    spec = HashSpec()
    value = spec.hash_image(image)
    assert spec.to_hex(value) == perceptual_hash(image)  # what resize.process_image stores as "phash"
    assert spec.parse_hex(perceptual_hash(image)) == value
    assert value.bit_length() <= 64


@pytest.mark.parametrize("kind,size,bits", [("phash", 8, 64), ("dhash", 8, 64), ("ahash", 5, 25),
                                            ("whash", 16, 256), ("phash", 16, 256)])
def test_every_kind_hashes_to_its_bit_width(kind, size, bits):
    spec = HashSpec(kind, size)
    assert spec.bits == bits
    original, mirror = spec.hash_with_mirror(smooth_image(2))
    assert original >> bits == 0 and mirror >> bits == 0
    assert spec.parse_hex(spec.to_hex(original)) == original


def test_hash_spec_rejects_bad_options_and_hex():
    with pytest.raises(ValueError, match="unknown hash kind"):
        HashSpec("md5")
    with pytest.raises(ValueError, match="power-of-two"):
        HashSpec("whash", 6)
    with pytest.raises(ValueError, match="2..64"):
        HashSpec("phash", 1)
    with pytest.raises(ValueError, match="not a hex hash"):
        HashSpec().parse_hex("xyz")
    with pytest.raises(ValueError, match="more than 64 bits"):
        HashSpec().parse_hex("1" + "0" * 16)


@pytest.mark.parametrize("bits", [25, 64, 100, 256])
def test_hash_arrays_round_trip(bits):
    rng = random.Random(bits)
    values = [rng.getrandbits(bits) for _ in range(50)] + [0, (1 << bits) - 1]
    array = hashes_to_array(values, bits)
    assert array.dtype == np.uint64 and array.shape == (52, -(-bits // 64))
    assert [array_row_to_int(row, bits) for row in array] == values


# --------------------------------------------------------------------------------------------------- index


@pytest.mark.parametrize("bits", [64, 25, 100, 256])
def test_index_equals_brute_force_for_every_radius_and_split(bits):
    rng = random.Random(7)
    values = clustered_hashes(bits, 1500, rng)
    hashes = hashes_to_array(values, bits)
    queries = rng.sample(values, 30) + [rng.getrandbits(bits) for _ in range(5)]
    lowest = -(-bits // 64)
    for radius in (0, 1, 3, 6, 10):
        for substrings in {None, max(lowest, radius + 1), max(lowest, 3)}:
            index = HammingIndex(hashes, bits, radius, substrings)
            for q in queries:
                words = index.query_words(q)
                for r in sorted({0, radius // 2, radius}):
                    entries, distances = index.search(q, r)
                    expected = brute_force(hashes, words, r)
                    assert sorted(entries.tolist()) == expected.tolist(), (bits, radius, substrings, r)
                    assert list(distances) == sorted(distances)  # nearest first
                    assert all(bin(values[e] ^ q).count("1") == d for e, d in zip(entries, distances))


def test_radius_boundary_is_inclusive():
    base = random.Random(3).getrandbits(64)
    at = base ^ 0xFF  # distance 8
    beyond = base ^ 0x1FF  # distance 9
    index = HammingIndex(hashes_to_array([beyond, at], 64), 64, 8, substrings=3)
    entries, distances = index.search(base)
    assert entries.tolist() == [1] and distances.tolist() == [8]
    assert index.search(base, 7)[0].tolist() == []
    assert HammingIndex(hashes_to_array([beyond, at], 64), 64, 9).search(base)[1].tolist() == [8, 9]


def test_index_refuses_radius_beyond_its_own_and_oversized_queries():
    index = HammingIndex(hashes_to_array([1, 2, 3], 64), 64, 4)
    with pytest.raises(ValueError, match="radius 0..4"):
        index.search(1, 5)
    with pytest.raises(ValueError, match="more than 64 bits"):
        index.search(1 << 64)
    with pytest.raises(ValueError, match="substrings"):
        HammingIndex(hashes_to_array([1], 64), 64, 4, substrings=65)
    with pytest.raises(ValueError, match="shape"):
        HammingIndex(np.zeros((3, 2), dtype=np.uint64), 64, 4)


def test_cost_model_picks_few_long_substrings_for_large_indexes():
    # the plain pigeonhole split (T + 1 substrings) is ~50x slower at T = 8 and 400k entries (bench_dedup.py)
    assert choose_substrings(64, 8, 400_000) in (3, 4)
    assert choose_substrings(64, 0, 400_000) == 1
    assert choose_substrings(256, 2, 1000) == 4  # 64-bit keys need at least 4 substrings of 256 bits


def test_200k_eval_images_fit_compactly_and_pickle_without_tables():
    rng = np.random.default_rng(0)
    n = 200_000
    hashes = rng.integers(0, 2**64, size=(n, 1), dtype=np.uint64)
    evals = EvalHashes(HashSpec(), *_ids(n), hashes, hashes ^ np.uint64(0xFFFF), radius=8)
    evals.index.build()
    assert not evals.index.scan
    mem = evals.memory_bytes()
    assert mem < 64 * 2**20, mem  # ~40 MB: hashes, 3 direct tables of 2^21-22 offsets, entry order, ids
    probe = int(hashes[12345, 0]) ^ 0b1011  # 3 bits from eval image 12345
    assert evals.match(probe).eval_id == "img12345" and evals.match(probe).distance == 3
    blob = pickle.dumps(evals)
    assert len(blob) < 2 * hashes.nbytes + 4 * 2**20  # hashes and ids only: tables are rebuilt
    again = pickle.loads(blob)
    assert again.match(probe) == evals.match(probe)


def _ids(n: int):
    from aligndata.filters.dedup import encode_ids

    return encode_ids([f"img{i}" for i in range(n)])


# ---------------------------------------------------------------------------------------------- eval hashes


def test_eval_hashes_match_copies_and_mirrors_and_report_the_nearest():
    spec = HashSpec()
    images = [smooth_image(seed) for seed in range(20)]
    pairs = [spec.hash_with_mirror(im) for im in images]
    evals = EvalHashes.from_ids(spec, [f"e{i}" for i in range(20)], [p[0] for p in pairs], [p[1] for p in pairs],
                                radius=8)
    match = evals.match(spec.hash_image(images[5]))
    assert (match.eval_id, match.distance, match.mirrored) == ("e5", 0, False)
    flipped = evals.match(spec.hash_image(ImageOps.mirror(images[7])))
    assert flipped.eval_id == "e7" and flipped.mirrored and flipped.detail().endswith("mirrored")
    assert evals.match(spec.hash_image(smooth_image(999))) is None
    assert evals.match(spec.hash_image(images[5]), radius=0).detail() == "e5 d=0"


def test_eval_hashes_refuse_mismatched_arrays():
    with pytest.raises(ValueError, match="2 ids but 1 hashes"):
        EvalHashes(HashSpec(), *_ids(2), hashes_to_array([1], 64), hashes_to_array([1], 64), radius=2)


@needs_coco
def test_real_photos_flipped_and_downscaled_copies_match_and_others_do_not():
    photos = sorted(COCO.glob("*.jpg"))[:24]
    spec = HashSpec()
    images = [decode_image(p.read_bytes()).image for p in photos]
    pairs = [spec.hash_with_mirror(im) for im in images[:12]]
    evals = EvalHashes.from_ids(spec, [p.name for p in photos[:12]], [p[0] for p in pairs],
                                [p[1] for p in pairs], radius=8)
    for photo, image in zip(photos[:12], images[:12]):
        half = image.resize((image.width // 2, image.height // 2), Image.Resampling.BICUBIC)
        for copy in (ImageOps.mirror(image), half):
            match = evals.match(spec.hash_image(copy))
            assert match is not None and match.eval_id == photo.name
    assert all(evals.match(spec.hash_image(im)) is None for im in images[12:])

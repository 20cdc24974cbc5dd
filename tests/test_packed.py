"""The packed forms the curate pipeline shuffles (pipeline/packed.py, pipeline/ngram_counts.py) and the ledger
part writer: exact round trips, bounded state, and the same counts as a plain Counter."""

from __future__ import annotations

import collections
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aligndata.pipeline import ledger, ngram_counts, packed
from aligndata.pipeline.candidates import make_uid


def test_a_record_round_trips_every_field_and_recomputes_the_uid():
    cand = {"url": "http://a.test/\udcff.jpg", "caption": "caf\u00e9 au lait \U0001f600", "row": 2**40 + 3,
            "page_url": "http://a.test/page", "extra": {"w": 3, "tags": ["x", None]}, "detail": "2 words"}
    row, code, detail, final = packed.unpack_record(7, packed.pack_record(cand, 5, final=True))
    assert row == {"uid": make_uid(cand["url"], cand["caption"]), "url": cand["url"], "caption": cand["caption"],
                   "page_url": cand["page_url"], "extra": cand["extra"], "src": 7, "row": 2**40 + 3}
    assert (code, detail, final) == (5, "2 words", True)


def test_batches_come_back_in_input_order_a_piece_at_a_time():
    rng = random.Random(0)
    rows = rng.sample(range(10**12), 3000)
    items = [packed.pack_verdict(r, r % 7, b"x" * rng.randrange(0, 200)) for r in rows]
    items.append(packed.pack_verdict(10**12 + 1, 1, b"y" * (3 * packed.STREAM_PIECE)))  # larger than a piece
    batch = packed.pack_batch(packed.VERDICT, list(items))
    assert batch[:1] == packed.VERDICT and len(batch) < sum(map(len, items)) / 2  # compressed
    out = list(packed.iter_batch(batch))
    assert out == sorted(items) and [packed.row_of(v) for v in out] == sorted([*rows, 10**12 + 1])
    assert list(packed.iter_batch(packed.pack_batch(packed.RECORD, []))) == []


def test_the_part_batcher_never_holds_more_than_its_bound():
    batcher = packed.PartBatcher(packed.RECORD, max_items=50, batch_items=8)
    emitted = collections.Counter()
    for i in range(1000):
        for part, batch in batcher.add((0, i % 13), packed.pack_verdict(i, 0)):
            emitted[part] += sum(1 for _ in packed.iter_batch(batch))
        assert batcher.held < 50
    for part, batch in batcher.flush():
        emitted[part] += sum(1 for _ in packed.iter_batch(batch))
    assert sum(emitted.values()) == 1000 and batcher.held == 0


def test_bucketed_counts_merge_to_the_counter_and_find_the_rare_texts():
    rng = random.Random(1)
    flushes = [collections.Counter({rng.randrange(2**63): rng.randrange(1, 5) for _ in range(3000)})
               for _ in range(4)]
    flushes.append(collections.Counter({h: 2 for h in list(flushes[0])[:500]}))  # the same n-grams again
    total = sum(flushes, collections.Counter())
    fn = ngram_counts.MergeCounts()
    by_bucket: dict = {}
    for counts in flushes:
        for bucket, value in ngram_counts.bucket_counts(counts):
            by_bucket[bucket] = fn.add_input(by_bucket.get(bucket, fn.create_accumulator()), value)
    merged = {}
    for bucket, acc in by_bucket.items():
        table = ngram_counts.unpack(fn.extract_output(acc))
        assert np.all(np.diff(table["hash"].astype(object)) > 0)  # sorted, one entry a hash
        assert all(int(h) % ngram_counts.NGRAM_BUCKETS == bucket for h in table["hash"])
        merged.update(zip(table["hash"].tolist(), table["count"].tolist()))
    assert merged == dict(total)

    freq = {"allowlist_threshold": 4}
    hot = next(iter(by_bucket))
    table_value = fn.extract_output(by_bucket[hot])
    in_bucket = [h for h in total if h % ngram_counts.NGRAM_BUCKETS == hot]
    pairs = {(h, 1000 + i): f"gram{i}" for i, h in enumerate(in_bucket)}
    join = [ngram_counts.rare((hot, table_value), freq)[1], *(v for _, v in ngram_counts.bucket_pairs(pairs))]
    found = sorted(ngram_counts.rare_texts((hot, join)))
    assert found == sorted((1000 + i, (total[h], f"gram{i}")) for i, h in enumerate(in_bucket) if total[h] < 4)
    assert ngram_counts.allowed((hot, table_value), freq)[0].tolist() == [h for h in sorted(in_bucket)
                                                                          if total[h] >= 4]


def test_a_ledger_part_is_written_a_row_group_at_a_time_and_unifies_extra_column_types(tmp_path, monkeypatch):
    monkeypatch.setattr(ledger._PartWriter, "CHUNK_ROWS", 4)
    rows = [{"n": None} for _ in range(5)] + [{"n": "x"} for _ in range(6)]  # a column null in the first chunk

    def to_table(chunk):
        return pa.table({"n": [r["n"] for r in chunk]})

    fixed = ledger._PartWriter(str(tmp_path / "fixed.parquet"),
                               lambda chunk: to_table(chunk).cast(pa.schema([("n", pa.string())])), fixed_schema=True)
    loose = ledger._PartWriter(str(tmp_path / "loose.parquet"), to_table, fixed_schema=False)
    for row in rows:
        fixed.add(row)
        loose.add(row)
    assert fixed.close() == loose.close() == 11
    assert pq.ParquetFile(tmp_path / "fixed.parquet").metadata.num_row_groups == 3  # streamed
    for name in ("fixed", "loose"):
        assert pq.read_table(tmp_path / f"{name}.parquet").column("n").to_pylist() == [r["n"] for r in rows]
    empty = ledger._PartWriter(str(tmp_path / "empty.parquet"), to_table, fixed_schema=False)
    assert empty.close() == 0 and pq.read_table(tmp_path / "empty.parquet").num_rows == 0


def test_an_aborted_part_leaves_no_file_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(ledger._PartWriter, "CHUNK_ROWS", 2)
    writer = ledger._PartWriter(str(tmp_path / "part.parquet"), lambda chunk: pa.table({"n": [r for r in chunk]}),
                                fixed_schema=True)
    for i in range(5):
        writer.add(i)
    assert writer._pq is not None  # row groups already streamed to a local temporary file
    writer.abort()
    assert not list(tmp_path.iterdir()) and writer._pq is None

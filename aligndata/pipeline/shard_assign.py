"""Assign the URLs to fetch to shards, before fetching, so each shard is downloaded and written by one worker.

Shards are ranges of a 63-bit hash of the image URL: with R candidate rows and a target of S samples per shard
there are ceil(R / S) ranges, each holding about S candidate rows (a binomial spread). All captions of one URL
land in the same shard, so an image is downloaded once and never shuffled between workers; a shard holds
fewer than S samples by the share of downloads and images that fail, as with img2dataset. The assignment
depends only on the candidate URLs, so it is the same on every run and every runner; ranges that received no
URL are skipped and the shards numbered contiguously from 00000 (a shard whose downloads all failed is still
written, empty, so the numbering never has a gap).
"""

from __future__ import annotations

import bisect
import math

import apache_beam as beam

from aligndata.filters.frequency import hash64

HASH_BITS = 63  # hash64 is non-negative and below 2**63


def shard_range(url: str, n_ranges: int) -> int:
    return (hash64(url) * n_ranges) >> HASH_BITS


class _NumberShards(beam.DoFn):
    """(range id, (url, row) pairs) -> (contiguous shard index, [(url, rows in input order), ...]), skipping
    ranges that received no URL. Holds one shard's rows (about --samples-per-shard)."""

    def __init__(self):
        self._source_id = None
        self._ranges: list[int] = []

    def process(self, kv, nonempty_ranges):
        if self._source_id != id(nonempty_ranges):  # sort the side input once per worker, not per shard
            self._ranges = sorted(nonempty_ranges)
            self._source_id = id(nonempty_ranges)
        range_id, url_rows = kv
        by_url: dict[str, list] = {}
        for url, row in url_rows:
            by_url.setdefault(url, []).append(row)
        groups = [(url, sorted(rows, key=lambda r: (r["src"], r["row"]))) for url, rows in by_url.items()]
        yield bisect.bisect_left(self._ranges, range_id), groups


class AssignShards(beam.PTransform):
    """(url, kept row) -> (shard index, [(url, rows), ...]): every caption of a URL in the same shard."""

    def __init__(self, samples_per_shard: int):
        super().__init__()
        self.samples_per_shard = samples_per_shard

    def expand(self, kept):
        per_shard = self.samples_per_shard
        n_ranges = (
            kept
            | "CandidateRows" >> beam.CombineGlobally(beam.combiners.CountCombineFn()).without_defaults()
            | "Ranges" >> beam.Map(lambda rows: max(1, math.ceil(rows / per_shard)))
        )
        keyed = kept | "KeyByRange" >> beam.Map(  # no kept row: one range, never asked for (no default branch)
            lambda kv, n: (shard_range(kv[0], n), kv), n=beam.pvalue.AsSingleton(n_ranges, default_value=1)
        )
        nonempty = keyed | "RangeIds" >> beam.Keys() | "DistinctRanges" >> beam.Distinct()
        return (
            keyed
            | "GroupByShard" >> beam.GroupByKey()
            | "NumberShards" >> beam.ParDo(_NumberShards(), beam.pvalue.AsList(nonempty))
        )

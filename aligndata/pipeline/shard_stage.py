"""Assign kept samples to shards and write them.

Shards are ranges of the uid space (uids are sha256 prefixes, so uniformly spread): with K kept samples and a
target of S per shard there are ceil(K / S) ranges, and each shard holds about S samples (a binomial spread,
listed exactly in sizes.json). The assignment depends only on the uids and K, so it is the same on every run
and every runner, needs no global sort, and each shard is written by exactly one writer. Empty ranges are
skipped and the remaining shards numbered contiguously from 00000.
"""

from __future__ import annotations

import bisect
import math

import apache_beam as beam

from aligndata.pipeline.shards import Sample, write_shard

UID_PREFIX_HEX = 12  # 48 bits of the uid decide the range


def shard_range(uid: str, n_ranges: int) -> int:
    return (int(uid[:UID_PREFIX_HEX], 16) * n_ranges) >> (4 * UID_PREFIX_HEX)


class _WriteShard(beam.DoFn):
    def __init__(self, output: str):
        self.output = output
        self._ranges_id = None
        self._ranges = []

    def process(self, kv, nonempty_ranges):
        range_id, samples = kv
        if self._ranges_id != id(nonempty_ranges):  # sort the side input once per worker, not per shard
            self._ranges = sorted(nonempty_ranges)
            self._ranges_id = id(nonempty_ranges)
        index = bisect.bisect_left(self._ranges, range_id)
        yield write_shard(
            self.output,
            index,
            (Sample(key=s["uid"], image=s["image"], image_ext=s["ext"], text=s["caption"], meta=s["meta"])
             for s in samples),
        )


class WriteShards(beam.PTransform):
    """samples -> shard files; outputs each shard's stats dict."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg

    def expand(self, samples):
        per_shard = self.cfg.samples_per_shard
        n_ranges = (
            samples
            | "CountKept" >> beam.combiners.Count.Globally()
            | "Ranges" >> beam.Map(lambda kept: max(1, math.ceil(kept / per_shard)))
        )
        keyed = samples | "KeyByRange" >> beam.Map(
            lambda s, n: (shard_range(s["uid"], n), s), n=beam.pvalue.AsSingleton(n_ranges)
        )
        nonempty = keyed | "RangeIds" >> beam.Map(lambda kv: kv[0]) | "DistinctRanges" >> beam.Distinct()
        return (
            keyed
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(_WriteShard(self.cfg.output), beam.pvalue.AsList(nonempty))
        )

"""``aligndata dedup SHARDS``: exact and near duplicates inside a shard set, as a Beam job.

Reads only each shard's parquet (uid, sha256, phash, caption), never the tars. The flow, top to bottom in
``build_dedup``, with what bounds each step (the pure pieces are in ``filters/corpus_dedup.py``):

  read: one shard's parquet a worker                                    bounded by a shard
  vertex stats: one combine per distinct pHash (exact-only: sha256)     O(1): count, first position, sha256
                                                                        range, salts (<= 512 bytes)
  near mode, T >= 1:
    band the distinct pHashes (T + 1 bands), per-bundle batches         a buffer of FLUSH_VERTICES values
    one combine per bucket: its count and smallest members              <= max_band_size values
    verify a bucket: local components -> star edges                     <= max_band_size**2 / 2 popcounts
    distinct edges; each vertex meets its stats and neighbours          one vertex: its degree
                                                                        (<= (T + 1) * (max_band_size - 1))
    min-label propagation, max_rounds rounds (pipeline/components.py)   one vertex: its degree
  group id (the first member's position) -> the vertex's salts          <= SALTS messages a vertex
  samples meet their group id by (vertex, salt)                         ~count / SALTS samples a key, streamed
  keep rule: (group, caption) -> (count, smallest uid) -> group best    O(1) combines
  each listed sample meets its keep mark by (uid, group)                one sample (a repeated uid: a few)
  parts by uid hash, sorted within a part                               ~PART_ROWS rows a part
  summary.json, last

No step gathers a hot key: a pHash shared by millions of placeholder images is one combine (O(1) state) and
reaches its samples in SALTS pieces; a band value shared by a huge number of distinct pHashes is capped and
reported; a giant component is never routed through one key. Output bytes are the same on every runner and
every run: group ids are positions, combines are order-free, parts are sorted.
"""

from __future__ import annotations

import math
from typing import Any
import zlib
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aligndata.filters import corpus_dedup as cd
from aligndata.io.atomic import write_bytes_atomic, write_json_atomic
from aligndata.io.inputs import InputError
from aligndata.io.storage import storage_for
from aligndata.pipeline import components
from aligndata.pipeline.outputs import emit
from aligndata.pipeline.progress import ProgressWriter
from aligndata.shards import duplicates as dup
from aligndata.shards.writer import parquet_bytes

FLUSH_VERTICES = 1 << 18  # distinct pHashes a banding bundle buffers before emitting its buckets (2 MB)
ROWS, STATS, LISTED, REPEATS = "rows", "stats", "listed", "repeats"
_EXACT, _NEAR = 0, 1
_KIND_NAMES = (dup.EXACT, dup.NEAR)


@dataclass(frozen=True)
class DedupConfig:
    shards: str  # SHARDS as the user wrote it
    output: str | None = None  # the duplicates directory; default SHARDS_DIR/duplicates
    hamming: int = cd.DEFAULT_CORPUS_HAMMING
    exact_only: bool = False
    max_band_size: int = cd.DEFAULT_MAX_BAND_SIZE
    max_rounds: int = cd.DEFAULT_MAX_ROUNDS
    overwrite: bool = False
    progress_dir: str | None = None

    @property
    def near(self) -> bool:
        return not self.exact_only

    def options(self) -> dict:
        return {"hamming": None if self.exact_only else self.hamming, "exact_only": self.exact_only,
                "max_band_size": self.max_band_size, "max_rounds": self.max_rounds}


# ------------------------------------------------------------------------------------------------- read


@beam.typehints.with_output_types(tuple[Any, Any])  # the main output (inference would see the tagged)
class ReadShard(beam.DoFn):
    """One shard's parquet -> per sample: (vertex, (position, salt, sha256)) for its vertex's stats, and
    ((vertex, salt), (uid, position, caption key)) to meet its group id later (ROWS). The vertex is the pHash
    (8 bytes, big-endian) in near mode, the sha256 (32 bytes) in exact-only mode."""

    COLUMNS = ("uid", "sha256", "phash", "caption")

    def __init__(self, near: bool, progress_dir: str | None):
        self.near = near
        self.progress_dir = progress_dir

    def setup(self):
        self.progress = ProgressWriter(self.progress_dir)

    def process(self, item):
        index, path = item
        columns = [c for c in self.COLUMNS if self.near or c != "phash"]
        table = read_parquet_columns(path, columns)
        values = [table.column(c).to_pylist() for c in columns]
        phashes = values[2] if self.near else None
        for row, (uid, sha) in enumerate(zip(values[0], values[1])):
            try:
                if not isinstance(uid, str) or not uid:
                    raise ValueError(f"uid {uid!r} is not a non-empty string")
                digest = cd.parse_sha256(sha)
                vertex = cd.parse_phash(phashes[row]).to_bytes(8, "big") if self.near else digest
            except ValueError as err:
                raise InputError(f"{path}: row {row} (uid {uid!r}): {err}") from None
            pos = cd.position(index, row)
            salt = cd.salt_of(uid)
            yield vertex, (pos, salt, digest)
            yield emit(ROWS, ((vertex, salt), (uid, pos, cd.caption_key(values[-1][row]))))
        self.progress.add(rows_read=len(values[0]))
        self.progress.flush()  # once a shard: the count is exact when the reading ends
        yield emit(STATS, {"shards": 1, "rows": len(values[0])})


def read_parquet_columns(path: str, columns: list[str]) -> pa.Table:
    """The columns of a shard's parquet; InputError naming the file when it is missing or lacks one."""
    storage = storage_for(path)
    try:
        with storage.open_read(path) as f:
            parquet = pq.ParquetFile(f)
            missing = [c for c in columns if c not in parquet.schema_arrow.names]
            if missing:
                raise InputError(f"{path} has no {', '.join(missing)} column(s): dedup reads the per-shard parquet "
                                 "that aligndata curate writes (uid, sha256, phash, caption)")
            return parquet.read(columns=columns)
    except (OSError, pa.ArrowInvalid) as err:
        raise InputError(f"cannot read {path}: {err}") from None


class VertexStats(beam.CombineFn):
    """One vertex's samples -> (count, first position, one sha256 among them?, salts). O(1) state."""

    def create_accumulator(self):
        return [0, None, None, None, ()]  # count, min position, min sha256, max sha256, salts

    def add_input(self, acc, element):
        pos, salt, digest = element
        acc[0] += 1
        acc[1] = pos if acc[1] is None or pos < acc[1] else acc[1]
        acc[2] = digest if acc[2] is None or digest < acc[2] else acc[2]
        acc[3] = digest if acc[3] is None or digest > acc[3] else acc[3]
        acc[4] = cd.salts_add(acc[4], salt)
        return acc

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for acc in accs:
            if not acc[0]:
                continue
            out[0] += acc[0]
            out[1] = acc[1] if out[1] is None or acc[1] < out[1] else out[1]
            out[2] = acc[2] if out[2] is None or acc[2] < out[2] else out[2]
            out[3] = acc[3] if out[3] is None or acc[3] > out[3] else out[3]
            out[4] = cd.salts_add(out[4], acc[4])
        return out

    def extract_output(self, acc):
        count, first, low, high, salts = acc
        return count, first, low == high, salts


# ------------------------------------------------------------------------------------------ near edges


class BandVertices(beam.DoFn):
    """Distinct pHashes -> ((band, band value), members as uint64 bytes), one element per bucket a flush."""

    def __init__(self, ranges):
        self.ranges = ranges

    def start_bundle(self):
        self.buffer = []

    def process(self, kv):
        self.buffer.append(kv[0])
        if len(self.buffer) >= FLUSH_VERTICES:
            yield from self._flush(False)

    def finish_bundle(self):
        yield from self._flush(True)

    def _flush(self, from_finish_bundle):
        if self.buffer:
            values = np.frombuffer(b"".join(self.buffer), dtype=">u8").astype(np.uint64)
            for key, members in cd.band_batches(values, self.ranges):
                yield emit(None, (key, members.tobytes()), from_finish_bundle)
        self.buffer = []


class BucketMembers(beam.CombineFn):
    """A bucket's members -> (count, its ``cap`` smallest values as uint64 bytes). O(cap) state."""

    def __init__(self, cap: int):
        self.cap = cap

    def create_accumulator(self):
        return [0, []]  # members seen, arrays held (compacted to the cap smallest beyond 2 * cap)

    def _held(self, acc):
        if sum(len(a) for a in acc[1]) > 2 * self.cap:
            acc[1] = [cd.capped_members(acc[1], self.cap)]
        return acc

    def add_input(self, acc, element):
        members = np.frombuffer(element, dtype=np.uint64)
        acc[0] += len(members)
        acc[1].append(members)
        return self._held(acc)

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for acc in accs:
            out[0] += acc[0]
            out[1].extend(acc[1])
            self._held(out)
        return out

    def extract_output(self, acc):
        return acc[0], cd.capped_members(acc[1], self.cap).tobytes()


@beam.typehints.with_output_types(tuple[Any, Any])  # the main output (inference would see the tagged)
class VerifyBucket(beam.DoFn):
    """A bucket -> the star edges of its local components (as pairs of 8-byte keys), and its counters."""

    def __init__(self, radius: int, ranges, cap: int, progress_dir: str | None):
        self.radius, self.ranges, self.cap, self.progress_dir = radius, ranges, cap, progress_dir

    def setup(self):
        self.progress = ProgressWriter(self.progress_dir)

    def process(self, kv):
        (band, _), (count, members) = kv
        values = np.frombuffer(members, dtype=np.uint64)
        roots, pairs = cd.near_components(values, self.radius, self.ranges[band])
        roots_at, members_at = cd.star_edges(values, roots)
        for a, b in zip(roots_at.tolist(), members_at.tolist()):
            yield a.to_bytes(8, "big"), b.to_bytes(8, "big")
        capped = count > self.cap
        self.progress.add(buckets=1)
        yield emit(STATS, {"buckets": 1, "buckets_over_cap": int(capped), "left_out": count - len(values),
                           "pairs_within_t": pairs, "largest_bucket": count})

    def finish_bundle(self):
        self.progress.flush()


@beam.typehints.with_output_types(tuple[Any, Any])  # the main output (inference would see the tagged)
class JoinVertex(beam.DoFn):
    """A vertex's stats and (near mode) its neighbours -> a group id now (no neighbours: a group when it has
    two samples or more) or a state for the propagation. Holds one vertex: its degree."""

    def process(self, kv):
        vertex, values = kv
        stats, neighbours = None, []
        for value in values:
            if isinstance(value, tuple):
                stats = value
            else:
                neighbours.append(value)
        count, first, uniform, salts = stats
        if neighbours:
            yield emit(STATS, {"cc_vertices": 1})
            yield vertex, components.VertexState(first, True, tuple(neighbours), salts)
        elif count >= 2:
            yield emit(LISTED, (vertex, first, _EXACT if uniform else _NEAR, salts))


def fan_out(item):
    """(vertex, group, kind, salts) -> ((vertex, salt), (group, kind)) for each salt its samples carry."""
    vertex, group, kind, salts = item
    for salt in cd.salts_list(salts):
        yield (vertex, salt), (group, kind)


@beam.typehints.with_output_types(tuple[Any, Any])  # the main output (inference would see the tagged)
class MeetGroup(beam.DoFn):
    """The samples of one (vertex, salt) and, if the vertex is in a group, its (group, kind): two streamed passes
    (the group arrives once; the samples are never listed). Outputs ((uid, group), kind) and votes for the keep
    rule ((group, caption key), uid)."""

    def process(self, kv):
        _, values = kv
        label = None
        for value in values:
            if len(value) == 2:
                label = value
                break
        if label is None:
            return
        group, kind = label
        for value in values:  # a GroupByKey's values may be iterated again
            if len(value) == 3:
                uid, _, caption = value
                yield emit(LISTED, ((uid, group), kind))
                yield (group, caption), uid


class CaptionVotes(beam.CombineFn):
    """(group, caption) -> (samples with it, smallest uid among them)."""

    def create_accumulator(self):
        return None

    def add_input(self, acc, uid):
        return (1, uid) if acc is None else (acc[0] + 1, min(acc[1], uid))

    def merge_accumulators(self, accs):
        out = None
        for acc in accs:
            if acc is not None:
                out = acc if out is None else (out[0] + acc[0], min(out[1], acc[1]))
        return out

    def extract_output(self, acc):
        return acc


class BestVote(beam.CombineFn):
    """group -> the keep rule's choice among its captions' (count, smallest uid)."""

    def create_accumulator(self):
        return None

    def add_input(self, acc, vote):
        return cd.better_vote(acc, vote)

    def merge_accumulators(self, accs):
        out = None
        for acc in accs:
            out = cd.better_vote(out, acc)
        return out

    def extract_output(self, acc):
        return acc


@beam.typehints.with_output_types(tuple[str, int, bool, int])
class ListRow(beam.DoFn):
    """(uid, group) with its kind(s) and keep mark -> one output row; counts rows that named the uid twice."""

    def process(self, kv):
        (uid, group), values = kv
        kind, keep, copies = None, False, 0
        for value in values:
            if value is True:
                keep = True
            else:
                copies += 1
                kind = value if kind is None else min(kind, value)
        if kind is None:
            raise RuntimeError(f"a keep mark for uid {uid} in group {group}, which has no such member")
        if copies > 1:
            yield emit(REPEATS, copies - 1)
        yield uid, group, keep, kind


class TallyRows(beam.CombineFn):
    """Output rows -> {kind: [samples, groups]} (a group has exactly one keep)."""

    def create_accumulator(self):
        return [[0, 0], [0, 0]]

    def add_input(self, acc, row):
        _, _, keep, kind = row
        acc[kind][0] += 1
        acc[kind][1] += keep
        return acc

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for acc in accs:
            for kind in (_EXACT, _NEAR):
                out[kind][0] += acc[kind][0]
                out[kind][1] += acc[kind][1]
        return out

    def extract_output(self, acc):
        return acc


class SumStats(beam.CombineFn):
    """Counter dicts -> their sums (``largest_*``: the maximum)."""

    def create_accumulator(self):
        return {}

    def add_input(self, acc, element):
        for key, n in element.items():
            acc[key] = max(acc.get(key, 0), n) if key.startswith("largest") else acc.get(key, 0) + n
        return acc

    def merge_accumulators(self, accs):
        out = {}
        for acc in accs:
            self.add_input(out, acc)
        return out

    def extract_output(self, acc):
        return dict(sorted(acc.items()))


# ------------------------------------------------------------------------------------------------ parts


def parts_for(rows: int) -> int:
    return max(1, math.ceil(rows / dup.PART_ROWS))


def part_of(uid: str, parts: int) -> int:
    return zlib.crc32(b"part:" + uid.encode("utf-8", errors="surrogatepass")) % parts


def rows_table(rows) -> pa.Table:
    rows = sorted(rows, key=lambda r: (r[0], r[1]))  # bounded: one part
    return pa.table({
        "uid": pa.array([r[0] for r in rows], pa.string()),
        "group": pa.array([r[1] for r in rows], pa.int64()),
        "keep": pa.array([r[2] for r in rows], pa.bool_()),
        "kind": pa.array([_KIND_NAMES[r[3]] for r in rows], pa.string()),
    }, schema=dup.SCHEMA)


class WritePart(beam.DoFn):
    """One part's rows (None: the part's placeholder, so an empty part is written too) -> its parquet file."""

    def __init__(self, output: str, progress_dir: str | None):
        self.output, self.progress_dir = output, progress_dir

    def setup(self):
        self.progress = ProgressWriter(self.progress_dir)

    def process(self, kv, parts):
        index, rows = kv
        rows = [r for r in rows if r is not None]
        storage = storage_for(self.output)
        write_bytes_atomic(storage.join(self.output, dup.part_name(index, parts)), parquet_bytes(rows_table(rows)))
        self.progress.add(listed=len(rows))
        self.progress.flush()
        yield len(rows)


def write_summary(_, cfg: DedupConfig, output: str, shard_count: int, read, tally, near_stats, changes, repeats,
                  vertices, written):
    """summary.json, once, after every part (``written`` depends on them all). The driver adds ``seconds``."""
    by_kind = {}
    for code, name in enumerate(_KIND_NAMES):
        samples, groups = tally[code]
        by_kind[name] = {"groups": groups, "samples": samples, "dropped": samples - groups}
    samples = sum(k["samples"] for k in by_kind.values())
    groups = sum(k["groups"] for k in by_kind.values())
    summary = {
        "shards": shard_count,
        "rows": read.get("rows", 0),
        "groups": groups,
        "samples_in_groups": samples,
        "dropped": samples - groups,
        "by_kind": by_kind,
        "T": cfg.options()["hamming"],
        **{k: v for k, v in cfg.options().items() if k != "hamming"},
        "distinct_vertices": vertices,
        "vertex": "sha256" if cfg.exact_only else "phash",
        "rows_written": written,
        "repeated_uid_rows": repeats,
        "parts": parts_for(samples),
    }
    if cfg.near:
        bands = cd.band_ranges(cfg.hamming) if cfg.hamming else []
        rounds_changed = components.changes_list(changes, cfg.max_rounds) if cfg.hamming else []
        summary["near"] = {
            "bands": [end - start for start, end in bands],
            "buckets": near_stats.get("buckets", 0),
            "largest_bucket": near_stats.get("largest_bucket", 0),
            "buckets_over_cap": near_stats.get("buckets_over_cap", 0),
            "members_left_out": near_stats.get("left_out", 0),
            "pairs_within_t": near_stats.get("pairs_within_t", 0),
            "edges": near_stats.get("edges", 0),
            "propagation": {
                "vertices": near_stats.get("cc_vertices", 0),
                "changed_per_round": rounds_changed,
                "converged": not rounds_changed or rounds_changed[-1] == 0,
            },
        }
    write_json_atomic(storage_for(output).join(output, dup.SUMMARY), summary)
    return summary


# --------------------------------------------------------------------------------------------- pipeline


def build_dedup(p: beam.Pipeline, cfg: DedupConfig, shard_parquets: list[str], output: str):
    """Add the whole dedup flow to ``p``."""
    read = (
        p
        | "Shards" >> beam.Create(list(enumerate(shard_parquets)), reshuffle=False)
        | "Spread" >> beam.Reshuffle()  # one worker a shard, not one a Create bundle
        | "Read" >> beam.ParDo(ReadShard(cfg.near, cfg.progress_dir)).with_outputs(ROWS, STATS, main="samples")
    )
    vertex_stats = read.samples | "VertexStats" >> beam.CombinePerKey(VertexStats())
    vertices = vertex_stats | "CountVertices" >> beam.combiners.Count.Globally()
    near_stats_parts = []
    changes = None
    if cfg.near and cfg.hamming > 0:
        ranges = cd.band_ranges(cfg.hamming)
        verified = (
            vertex_stats
            | "Band" >> beam.ParDo(BandVertices(ranges))
            | "Bucket" >> beam.CombinePerKey(BucketMembers(cfg.max_band_size))
            | "Verify" >> beam.ParDo(VerifyBucket(cfg.hamming, ranges, cfg.max_band_size, cfg.progress_dir))
            .with_outputs(STATS, main="edges")
        )
        edges = verified.edges | "DistinctEdges" >> beam.Distinct()
        near_stats_parts += [verified[STATS],
                             edges | "EdgeCount" >> beam.combiners.Count.Globally()
                             | "AsEdges" >> beam.Map(lambda n: {"edges": n})]
        neighbours = edges | "BothWays" >> beam.FlatMap(lambda e: ((e[0], e[1]), (e[1], e[0])))
        joined = (
            (vertex_stats, neighbours)
            | "StatsAndNeighbours" >> beam.Flatten()
            | "ByVertex" >> beam.GroupByKey()  # one vertex: its stats and its degree's neighbours
            | "JoinVertex" >> beam.ParDo(JoinVertex()).with_outputs(LISTED, STATS, main="states")
        )
        near_stats_parts.append(joined[STATS])
        states, changes = components.propagate(joined.states, cfg.max_rounds)
        in_components = states | "Labelled" >> beam.Map(lambda kv: (kv[0], kv[1].label, _NEAR, kv[1].payload))
        labelled = (joined[LISTED], in_components) | "AllLabelled" >> beam.Flatten()
    else:  # no near edges: a vertex with two samples or more is a group by itself
        labelled = (
            vertex_stats
            | "Groups" >> beam.Filter(lambda kv: kv[1][0] >= 2)
            | "Label" >> beam.Map(lambda kv: (kv[0], kv[1][1], _EXACT if kv[1][2] else _NEAR, kv[1][3]))
        )

    met = (
        (labelled | "FanOut" >> beam.FlatMap(fan_out), read[ROWS])
        | "GroupsAndSamples" >> beam.Flatten()
        | "BySalt" >> beam.GroupByKey()  # one (vertex, salt): ~count / SALTS samples, streamed
        | "MeetGroup" >> beam.ParDo(MeetGroup()).with_outputs(LISTED, main="votes")
    )
    keeps = (
        met.votes
        | "CaptionVotes" >> beam.CombinePerKey(CaptionVotes())
        | "ByGroup" >> beam.Map(lambda kv: (kv[0][0], kv[1]))
        | "BestVote" >> beam.CombinePerKey(BestVote())
        | "KeepMark" >> beam.Map(lambda kv: ((kv[1][1], kv[0]), True))
    )
    listed = (
        (met[LISTED], keeps)
        | "MembersAndKeeps" >> beam.Flatten()
        | "ByUid" >> beam.GroupByKey()  # one (uid, group): one sample, a few if SHARDS repeats it
        | "ListRow" >> beam.ParDo(ListRow()).with_outputs(REPEATS, main="rows")
    )
    rows = listed.rows
    tally = rows | "Tally" >> beam.CombineGlobally(TallyRows())
    parts = tally | "Parts" >> beam.Map(lambda t: parts_for(t[0][0] + t[1][0]))
    parts_side = beam.pvalue.AsSingleton(parts)
    placeholders = parts | "EveryPart" >> beam.FlatMap(lambda n: ((i, None) for i in range(n)))
    written = (
        (rows | "ToPart" >> beam.Map(lambda r, n: (part_of(r[0], n), r), n=parts_side), placeholders)
        | "RowsAndParts" >> beam.Flatten()
        | "ByPart" >> beam.GroupByKey()  # one part: ~PART_ROWS rows
        | "WritePart" >> beam.ParDo(WritePart(output, cfg.progress_dir), parts_side)
        | "Written" >> beam.CombineGlobally(sum)
    )

    def total(pcoll, label, combine):
        return beam.pvalue.AsSingleton(pcoll | f"{label}Total" >> beam.CombineGlobally(combine))

    near_stats = (near_stats_parts or [p | "NoNear" >> beam.Create([{}])]) | "NearParts" >> beam.Flatten()
    side = {
        "read": total(read[STATS], "Read", SumStats()),
        "tally": beam.pvalue.AsSingleton(tally),
        "near_stats": total(near_stats, "Near", SumStats()),
        "changes": beam.pvalue.AsSingleton(changes if changes is not None else p | "NoRounds" >> beam.Create([{}])),
        "repeats": total(listed[REPEATS], "Repeats", sum),
        "vertices": beam.pvalue.AsSingleton(vertices),
        "written": beam.pvalue.AsSingleton(written),
    }
    return (p | "Final" >> beam.Create([None])
            | "Summary" >> beam.Map(write_summary, cfg=cfg, output=output, shard_count=len(shard_parquets), **side))



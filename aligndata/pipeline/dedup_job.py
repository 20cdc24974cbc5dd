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
  parts by uid hash (one per PART_ROWS samples read): members meet      <= ~PART_ROWS samples a part
  their keep marks, sorted by (uid, group), written
  summary.json, last

No step gathers a hot key: a pHash shared by millions of placeholder images is one combine (O(1) state) and
reaches its samples in SALTS pieces; a band value shared by a huge number of distinct pHashes is capped and
reported; a giant component is never routed through one key. Output bytes are the same on every runner and
every run: group ids are positions, combines are order-free, parts are sorted.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.pvalue import TaggedOutput

from aligndata.filters import corpus_dedup as cd
from aligndata.io.atomic import write_bytes_atomic, write_json_atomic
from aligndata.io.inputs import InputError
from aligndata.io.storage import storage_for
from aligndata.io import tables
from aligndata.pipeline import components
from aligndata.pipeline.outputs import emit
from aligndata.pipeline.progress import ProgressWriter
from aligndata.pipeline.report import SumCounts
from aligndata.shards import duplicates as dup
from aligndata.shards.writer import parquet_bytes

FLUSH_VERTICES = 1 << 18  # distinct pHashes a banding bundle buffers before emitting its buckets (2 MB)
ROWS, STATS, LISTED = "rows", "stats", "listed"
_EXACT, _NEAR = 0, 1
_SALT = struct.Struct(">H")  # a salt after the vertex in the (vertex, salt) key
_ROW = struct.Struct(">qq")  # a sample's position and caption key, then its uid (UTF-8)
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
    """One shard's parquet -> per sample: (vertex, (position, salt, sha256[:8])) for its vertex's stats, and
    (vertex + salt, position + caption key + uid) packed as bytes, to meet its group id later (ROWS). The vertex
    is the pHash (8 bytes, big-endian) in near mode, the sha256 (32 bytes) in exact-only mode."""

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
        captions = values[-1]
        for row, (uid, sha) in enumerate(zip(values[0], values[1])):
            try:
                if not isinstance(uid, str) or not uid:
                    raise ValueError(f"uid {uid!r} is not a non-empty string")
                digest = cd.parse_sha256(sha)
                vertex = cd.phash_bytes(phashes[row]) if self.near else digest
            except ValueError as err:
                raise InputError(f"{path}: row {row} (uid {uid!r}): {err}") from None
            pos = cd.position(index, row)
            uid_bytes = uid.encode("utf-8", errors="surrogatepass")
            salt = cd.salt_of(uid_bytes)
            yield vertex, (pos, salt, digest[:8])
            yield TaggedOutput(ROWS, (vertex + _SALT.pack(salt), _ROW.pack(pos, cd.caption_key(captions[row]))
                                      + uid_bytes))
        self.progress.add(rows_read=len(values[0]))
        self.progress.flush()  # once a shard: the count is exact when the reading ends
        yield emit(STATS, {"shards": 1, "rows": len(values[0])})


def read_parquet_columns(path: str, columns: list[str]) -> pa.Table:
    """The columns of a shard's parquet; InputError naming the file when it is missing or lacks one."""
    try:
        return tables.read_parquet_columns(storage_for(path), path, columns)
    except tables.ParquetColumnsError as err:
        if err.missing:
            raise InputError(f"{path} has no {', '.join(err.missing)} column(s): dedup reads the per-shard parquet "
                             "that aligndata curate writes (uid, sha256, phash, caption)") from None
        raise InputError(f"cannot read {path}: {err.cause}") from None


class VertexStats(beam.CombineFn):
    """One vertex's samples -> (count, first position, one sha256 among them?, salts). O(1) state. (Whether the
    samples share one sha256 is judged on its first 8 bytes: a false "exact" needs a 64-bit collision.)"""

    def create_accumulator(self):
        return [0, None, None, None, ()]  # count, min position, min sha256[:8], max sha256[:8], salts

    def add_input(self, acc, element):
        pos, salt, digest = element
        if not acc[0]:
            acc[:] = [1, pos, digest, digest, (salt,)]
            return acc
        acc[0] += 1
        if pos < acc[1]:
            acc[1] = pos
        if digest < acc[2]:
            acc[2] = digest
        elif digest > acc[3]:
            acc[3] = digest
        acc[4] = cd.salts_add(acc[4], salt)
        return acc

    def merge_accumulators(self, accs):
        out = None
        for acc in accs:
            if not acc[0]:
                continue
            if out is None:
                out = list(acc)
                continue
            out[0] += acc[0]
            out[1] = min(out[1], acc[1])
            out[2] = min(out[2], acc[2])
            out[3] = max(out[3], acc[3])
            out[4] = cd.salts_add(out[4], acc[4])
        return out or self.create_accumulator()

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
    """A bucket's members -> (count, uint64 bytes of them, in no particular order; over ``cap`` members: the
    ``cap`` smallest, sorted). O(cap) state: at most 2 * cap members held before the smallest cap are kept."""

    def __init__(self, cap: int):
        self.cap = cap

    def create_accumulator(self):
        return [0, []]  # members seen, uint64 bytes held

    def _held(self, acc):
        if sum(len(b) for b in acc[1]) > 16 * self.cap:  # 8 bytes a member
            acc[1] = [cd.capped_members([np.frombuffer(b, np.uint64) for b in acc[1]], self.cap).tobytes()]
        return acc

    def add_input(self, acc, element):
        acc[0] += len(element) // 8
        acc[1].append(element)
        return self._held(acc)

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for acc in accs:
            out[0] += acc[0]
            out[1].extend(acc[1])
            self._held(out)
        return out

    def extract_output(self, acc):
        if acc[0] <= self.cap:
            return acc[0], b"".join(acc[1])
        return acc[0], cd.capped_members([np.frombuffer(b, np.uint64) for b in acc[1]], self.cap).tobytes()


class VerifyBucket(beam.DoFn):
    """A bucket -> the star edges of its local components (as pairs of 8-byte keys); its counters are summed
    per bundle (STATS)."""

    def __init__(self, radius: int, ranges, cap: int, progress_dir: str | None):
        self.radius, self.ranges, self.cap, self.progress_dir = radius, ranges, cap, progress_dir

    def setup(self):
        self.progress = ProgressWriter(self.progress_dir)

    def start_bundle(self):
        self.stats = SumStats().create_accumulator()

    def process(self, kv):
        (band, _), (count, members) = kv
        stats = {"buckets": 1, "largest_bucket": count}
        if count > self.cap:
            stats.update(buckets_over_cap=1, left_out=count - self.cap)
        if count >= 2:
            values = np.frombuffer(members, dtype=np.uint64)
            roots_at, members_at, stats["pairs_within_t"] = cd.bucket_edges(values, self.radius, self.ranges[band])
            edges = zip(roots_at, members_at)
            for a, b in edges:
                yield a.to_bytes(8, "big"), b.to_bytes(8, "big")
        SumStats().add_input(self.stats, stats)
        self.progress.add(buckets=1)

    def finish_bundle(self):
        self.progress.flush()
        if self.stats:
            yield emit(STATS, self.stats, from_finish_bundle=True)


@beam.typehints.with_output_types(tuple[Any, Any])  # the main output (inference would see the tagged)
class JoinVertex(beam.DoFn):
    """A vertex's stats and (near mode) its neighbours -> a group id now (no neighbours: a group when it has
    two samples or more; LISTED) or a state for the propagation (main). Holds one vertex: its degree. Without
    near edges (exact-only, T = 0) it gets the stats alone. Counts vertices per bundle (STATS)."""

    def start_bundle(self):
        self.vertices = self.in_components = 0

    def process(self, kv):
        vertex, values = kv
        if isinstance(values, tuple):  # the stats themselves: no neighbours to wait for
            stats, neighbours = values, ()
        else:
            stats, neighbours = None, []
            for value in values:
                if isinstance(value, tuple):
                    stats = value
                else:
                    neighbours.append(value)
        count, first, uniform, salts = stats
        self.vertices += 1
        if neighbours:
            self.in_components += 1
            yield vertex, components.state(first, tuple(neighbours), salts)
        elif count >= 2:
            yield TaggedOutput(LISTED, (vertex, first, _EXACT if uniform else _NEAR, salts))

    def finish_bundle(self):
        yield emit(STATS, {"vertices": self.vertices, "cc_vertices": self.in_components}, from_finish_bundle=True)


def fan_out(item):
    """(vertex, group, kind, salts) -> (vertex + salt, (group, kind)) for each salt its samples carry."""
    vertex, group, kind, salts = item
    for salt in cd.salts_list(salts):
        yield vertex + _SALT.pack(salt), (group, kind)


@beam.typehints.with_output_types(tuple[Any, Any])  # the main output (inference would see the tagged)
class MeetGroup(beam.DoFn):
    """The samples of one (vertex, salt) and, if the vertex is in a group, its (group, kind): two streamed passes
    (the group arrives once; the samples are never listed). Outputs members (uid, group, kind) (LISTED) and votes
    for the keep rule ((group, caption key), uid). Samples of a vertex in no group are not even unpacked."""

    def process(self, kv):
        _, values = kv
        label = None
        for value in values:
            if isinstance(value, tuple):
                label = value
                break
        if label is None:
            return
        group, kind = label
        for value in values:  # a GroupByKey's values may be iterated again
            if isinstance(value, bytes):
                _, caption = _ROW.unpack_from(value)
                uid = value[_ROW.size:].decode("utf-8", errors="surrogatepass")
                yield TaggedOutput(LISTED, (uid, group, kind))
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


class SumStats(SumCounts):
    """Counter dicts -> their sums (``largest_*``: the maximum)."""

    def add_input(self, acc, element):
        for key, n in element.items():
            acc[key] = max(acc.get(key, 0), n) if key.startswith("largest") else acc.get(key, 0) + n
        return acc


# ------------------------------------------------------------------------------------------------ parts


def parts_for(rows: int) -> int:
    """One part per PART_ROWS samples read: a part can never hold more than PART_ROWS listed samples."""
    return max(1, math.ceil(rows / dup.PART_ROWS))


def part_of(uid: str, parts: int) -> int:
    return zlib.crc32(b"part:" + uid.encode("utf-8", errors="surrogatepass")) % parts


class WritePart(beam.DoFn):
    """One part: its members (uid, group, kind), the keep marks (uid, group) of its uids, and None (every part
    gets one, so an empty part is written too) -> the part's parquet, sorted by (uid, group); outputs its
    counters. Holds one part (<= PART_ROWS samples)."""

    def __init__(self, output: str, progress_dir: str | None):
        self.output, self.progress_dir = output, progress_dir

    def setup(self):
        self.progress = ProgressWriter(self.progress_dir)

    def process(self, kv, parts):
        index, values = kv
        rows: dict[tuple[str, int], list] = {}  # (uid, group) -> [kind, keep, copies]
        keeps = []
        for value in values:
            if value is None:
                continue
            if len(value) == 2:
                keeps.append(value)
                continue
            uid, group, kind = value
            row = rows.get((uid, group))
            if row is None:
                rows[(uid, group)] = [kind, False, 1]
            else:  # SHARDS holds this sample twice (one uid, one group): listed once
                row[0], row[2] = min(row[0], kind), row[2] + 1
        for key in keeps:
            if key not in rows:
                raise RuntimeError(f"a keep mark for uid {key[0]} in group {key[1]}, which has no such member")
            rows[key][1] = True
        ordered = sorted(rows.items())
        table = pa.table({
            "uid": pa.array([k[0] for k, _ in ordered], pa.string()),
            "group": pa.array([k[1] for k, _ in ordered], pa.int64()),
            "keep": pa.array([r[1] for _, r in ordered], pa.bool_()),
            "kind": pa.array([_KIND_NAMES[r[0]] for _, r in ordered], pa.string()),
        }, schema=dup.SCHEMA)
        storage = storage_for(self.output)
        write_bytes_atomic(storage.join(self.output, dup.part_name(index, parts)), parquet_bytes(table))
        self.progress.add(listed=len(ordered))
        self.progress.flush()
        counts = {"rows_written": len(ordered), "repeated_uid_rows": sum(r[2] - 1 for _, r in ordered)}
        for kind, keep, _ in rows.values():
            name = _KIND_NAMES[kind]
            counts[f"{name}_samples"] = counts.get(f"{name}_samples", 0) + 1
            counts[f"{name}_groups"] = counts.get(f"{name}_groups", 0) + keep
        yield counts


def write_summary(_, cfg: DedupConfig, output: str, shard_count: int, read, written, near_stats, changes):
    """summary.json, once, after every part (``written``: the parts' counters). The driver adds ``seconds``."""
    by_kind = {}
    for name in _KIND_NAMES:
        samples, groups = written.get(f"{name}_samples", 0), written.get(f"{name}_groups", 0)
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
        "distinct_vertices": near_stats.get("vertices", 0),
        "vertex": "sha256" if cfg.exact_only else "phash",
        "rows_written": written.get("rows_written", 0),
        "repeated_uid_rows": written.get("repeated_uid_rows", 0),
        "parts": parts_for(read.get("rows", 0)),
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
        by_vertex = (
            (vertex_stats, neighbours)
            | "StatsAndNeighbours" >> beam.Flatten()
            | "ByVertex" >> beam.GroupByKey()  # one vertex: its stats and its degree's neighbours
        )
    else:  # no near edges: a vertex with two samples or more is a group by itself
        by_vertex = vertex_stats
    joined = by_vertex | "JoinVertex" >> beam.ParDo(JoinVertex()).with_outputs(LISTED, STATS, main="states")
    near_stats_parts.append(joined[STATS])
    labelled = joined[LISTED]
    if cfg.near and cfg.hamming > 0:
        states, changes = components.propagate(joined.states, cfg.max_rounds)
        in_components = states | "Labelled" >> beam.Map(
            lambda kv: (kv[0], kv[1][components.LABEL], _NEAR, kv[1][components.PAYLOAD]))
        labelled = (labelled, in_components) | "AllLabelled" >> beam.Flatten()

    met = (
        (labelled | "FanOut" >> beam.FlatMap(fan_out), read[ROWS])
        | "GroupsAndSamples" >> beam.Flatten()
        | "BySalt" >> beam.GroupByKey()  # one vertex + salt: ~count / SALTS samples, streamed
        | "MeetGroup" >> beam.ParDo(MeetGroup()).with_outputs(LISTED, main="votes")
    )
    read_stats = read[STATS] | "ReadTotal" >> beam.CombineGlobally(SumStats())
    parts = read_stats | "Parts" >> beam.Map(lambda stats: parts_for(stats.get("rows", 0)))
    parts_side = beam.pvalue.AsSingleton(parts)
    keeps = (
        met.votes
        | "CaptionVotes" >> beam.CombinePerKey(CaptionVotes())
        | "ByGroup" >> beam.Map(lambda kv: (kv[0][0], kv[1]))
        | "BestVote" >> beam.CombinePerKey(BestVote())
        | "KeepMark" >> beam.Map(lambda kv, n: (part_of(kv[1][1], n), (kv[1][1], kv[0])), n=parts_side)
    )
    members = met[LISTED] | "ToPart" >> beam.Map(lambda m, n: (part_of(m[0], n), m), n=parts_side)
    placeholders = parts | "EveryPart" >> beam.FlatMap(lambda n: ((i, None) for i in range(n)))
    written = (
        (members, keeps, placeholders)
        | "MembersKeepsAndParts" >> beam.Flatten()
        | "ByPart" >> beam.GroupByKey()  # one part: <= PART_ROWS samples and their keep marks
        | "WritePart" >> beam.ParDo(WritePart(output, cfg.progress_dir), parts_side)
        | "Written" >> beam.CombineGlobally(SumStats()).as_singleton_view()
    )
    near_stats = near_stats_parts | "NearParts" >> beam.Flatten()
    # Singleton views without CombineGlobally's default-injecting branch (two fused stages less each, as in
    # curate); read_stats keeps its default: "Parts" needs its one element even when nothing was read.
    side = {
        "read": beam.pvalue.AsSingleton(read_stats),
        "written": written,
        "near_stats": near_stats | "NearTotal" >> beam.CombineGlobally(SumStats()).as_singleton_view(),
        "changes": beam.pvalue.AsSingleton(changes if changes is not None else p | "NoRounds" >> beam.Create([{}])),
    }
    return (p | "Final" >> beam.Create([None])
            | "Summary" >> beam.Map(write_summary, cfg=cfg, output=output, shard_count=len(shard_parquets), **side))



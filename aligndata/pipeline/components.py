"""Connected components as bounded min-label propagation: ``max_rounds`` rounds unrolled in the pipeline.

Vertices carry a state (label, changed, neighbours, payload); every round each vertex whose label changed in the
previous round sends its label to its neighbours, and each vertex takes the smallest label it hears. After
``diameter`` rounds every vertex holds the smallest initial label of its component; a round in which no label
changes means it has converged, and the rounds after it only pass the states along.

Bounded: a vertex's group holds its state and at most one message per neighbour, so a worker holds one vertex's
degree, never a component (propagation never routes a component through one key, as pointer jumping or star
contraction would for a giant component). The degree is bounded by whoever builds the edges (dedup: at most
(T + 1) * (max_band_size - 1)). Rounds are bounded by ``max_rounds``; each round's number of changed labels goes
to the summary, so a component still changing in the last round (a chain longer than the rounds) is reported,
never silently split.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam

from aligndata.pipeline.outputs import emit

CHANGED = "changed"


def state(label: int, neighbours: tuple, payload=None, changed: bool = True) -> tuple:
    """A vertex's state: (label, changed last round, the neighbours' keys, a payload carried along untouched
    (dedup: the vertex's salts)). A plain tuple: Beam codes it natively, where a class would be pickled."""
    return label, changed, neighbours, payload


LABEL, CHANGED_FLAG, NEIGHBOURS, PAYLOAD = range(4)


class SendLabels(beam.DoFn):
    """A vertex's state to itself, and its label (an int) to every neighbour if it changed last round."""

    def process(self, kv):
        key, vertex = kv
        yield key, vertex
        if vertex[CHANGED_FLAG]:
            label = vertex[LABEL]
            for neighbour in vertex[NEIGHBOURS]:
                yield neighbour, label


@beam.typehints.with_output_types(tuple[Any, tuple])  # the main output
class TakeSmallest(beam.DoFn):
    """The state and the labels heard (at most one a neighbour) -> the new state; counts the changes (CHANGED:
    (round, labels changed in this bundle))."""

    def __init__(self, round_index: int):
        self.round_index = round_index

    def start_bundle(self):
        self.changes = 0

    def process(self, kv):
        key, values = kv
        vertex, heard = None, None
        for value in values:
            if isinstance(value, tuple):
                vertex = value
            elif heard is None or value < heard:
                heard = value
        if vertex is None:  # only messages: every neighbour is itself a vertex, so this is a broken edge list
            raise RuntimeError(f"labels sent to {key!r}, which has no state")
        changed = heard is not None and heard < vertex[LABEL]
        self.changes += changed
        yield key, state(heard if changed else vertex[LABEL], vertex[NEIGHBOURS], vertex[PAYLOAD], changed)

    def finish_bundle(self):
        yield emit(CHANGED, (self.round_index, self.changes), from_finish_bundle=True)


def propagate(states, max_rounds: int, prefix: str = "Round"):
    """(key, state) -> (final states, {round: labels changed in it}, one dict as a PCollection; a round
    without any vertex is absent)."""
    changes = []
    for r in range(max_rounds):
        result = (
            states
            | f"{prefix}{r}Send" >> beam.ParDo(SendLabels())
            | f"{prefix}{r}Group" >> beam.GroupByKey()  # one vertex: its state and <= degree labels
            | f"{prefix}{r}Take" >> beam.ParDo(TakeSmallest(r)).with_outputs(CHANGED, main="states")
        )
        states = result.states
        changes.append(result[CHANGED])
    per_round = (
        changes
        | f"{prefix}Changes" >> beam.Flatten()
        | f"{prefix}SumChanges" >> beam.CombinePerKey(sum)
        | f"{prefix}ChangesDict" >> beam.combiners.ToDict()
    )
    return states, per_round


def changes_list(per_round: dict, max_rounds: int) -> list[int]:
    """The per-round counts in round order, 0 for rounds no vertex reached."""
    return [per_round.get(r, 0) for r in range(max_rounds)]

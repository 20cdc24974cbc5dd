"""Beam's DoFn state/timer introspection, cached per DoFn instance (pipeline/dofn_specs.py): the same answers as
Beam's own walk, fresh sets for every caller, and Beam's checks of stateful DoFns still fire."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.transforms import userstate
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from aligndata.pipeline import dofn_specs
from aligndata.pipeline.run import pipeline_options

COUNT = ReadModifyWriteStateSpec("count", VarIntCoder())


class Stateful(beam.DoFn):
    def process(self, element, count=beam.DoFn.StateParam(COUNT)):
        yield element


class Plain(beam.DoFn):
    def process(self, element):
        yield element


class Unhashable(beam.DoFn):
    __hash__ = None

    def process(self, element):
        yield element


def test_installed_by_pipeline_options():
    pipeline_options([])
    assert userstate.get_dofn_specs is dofn_specs._cached


@pytest.mark.parametrize("make", [Stateful, Plain, Unhashable, lambda: beam.Map(len).fn])
def test_same_specs_as_beams_walk(make):
    dofn = make()
    expected = dofn_specs._ORIGINAL(dofn)
    first, second = dofn_specs._cached(dofn), dofn_specs._cached(dofn)
    assert first == second == expected
    first[0].add("a caller's own change")
    assert dofn_specs._cached(dofn) == expected  # every caller gets fresh sets


def test_stateful_dofns_are_still_recognised():
    pipeline_options([])
    assert userstate.is_stateful_dofn(Stateful()) and not userstate.is_stateful_dofn(Plain())
    with pytest.raises(ValueError, match="stateful DoFn must be key-value pairs"):  # Beam's own check
        with beam.Pipeline(options=pipeline_options([])) as p:
            _ = p | beam.Create([1, 2]) | beam.ParDo(Stateful())

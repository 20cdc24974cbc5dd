"""Beam's repeated construction-time computations, cached (pipeline/beam_caches.py): the same answers as Beam's
own code, fresh sets for every caller, views that share their options' values, and Beam's checks still fire."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.options.pipeline_options import DebugOptions, DirectOptions, PipelineOptions, TypeOptions
from apache_beam.transforms import userstate
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from aligndata.pipeline import beam_caches
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
    assert userstate.get_dofn_specs is beam_caches._dofn_specs
    assert PipelineOptions.view_as is beam_caches._view_as


@pytest.mark.parametrize("make", [Stateful, Plain, Unhashable, lambda: beam.Map(len).fn])
def test_same_specs_as_beams_walk(make):
    dofn = make()
    expected = beam_caches._BEAM_DOFN_SPECS(dofn)
    first, second = beam_caches._dofn_specs(dofn), beam_caches._dofn_specs(dofn)
    assert first == second == expected
    first[0].add("a caller's own change")
    assert beam_caches._dofn_specs(dofn) == expected  # every caller gets fresh sets


def test_stateful_dofns_are_still_recognised():
    pipeline_options([])
    assert userstate.is_stateful_dofn(Stateful()) and not userstate.is_stateful_dofn(Plain())
    with pytest.raises(ValueError, match="stateful DoFn must be key-value pairs"):  # Beam's own check
        with beam.Pipeline(options=pipeline_options([])) as p:
            _ = p | beam.Create([1, 2]) | beam.ParDo(Stateful())


def test_views_share_their_options_values():
    options = pipeline_options(["--direct_num_workers", "3", "--experiments", "a"])
    view = options.view_as(DirectOptions)
    assert options.view_as(DirectOptions) is view  # built once
    assert view.direct_num_workers == 3 and options.view_as(DebugOptions).experiments == ["a"]
    view.direct_num_workers = 5  # a write through one view is seen through every other, as with Beam's views
    assert options.view_as(DirectOptions).direct_num_workers == 5
    assert options.get_all_options()["direct_num_workers"] == 5
    options.view_as(DebugOptions).experiments.append("b")
    assert options.view_as(DebugOptions).experiments == ["a", "b"]
    other = PipelineOptions(["--direct_num_workers", "4"])  # another options object has views of its own
    assert other.view_as(DirectOptions).direct_num_workers == 4
    assert beam_caches._BEAM_VIEW_AS(options, TypeOptions).pipeline_type_check \
        == options.view_as(TypeOptions).pipeline_type_check

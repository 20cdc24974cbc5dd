"""Two pure computations Beam repeats while it builds and submits a pipeline, done once each here.

Both are on the launcher's critical path: with warm workers (warm_workers.py) the workers wait for it. Measured on
a 10-photo curate (Beam 2.77, multi_processing), in the launcher's ~4 CPU-s:

- ``userstate.get_dofn_specs(dofn)`` walks ``dir(dofn)`` and builds an ``inspect`` signature for every method,
  looking for StateParam/TimerParam defaults. Beam asks 4-5 times for each DoFn instance (building the ParDo,
  then is_stateful_dofn, validate_stateful_dofn, runner_api_requires_keyed_input in ``to_runner_api``; again in
  each worker's bundle processor): 402 walks, 0.87 s. The answer depends only on the instance's methods and their
  defaults, fixed once the DoFn exists (a Map's wrapper holds its function from construction), so it is kept per
  instance; callers get fresh sets, as before.
- ``PipelineOptions.view_as(cls)`` builds an argparse parser for ``cls`` and parses the flags again on every
  call (``Pipeline.apply`` asks for TypeOptions on every transform): 593 calls, ~1 s. A view holds no state of
  its own (its values live in the ``_all_options`` dict it shares with the options it came from, and
  ``view_as`` fills that dict only the first time), so the same view is handed out again while the options keep
  the same flags and dict.

Both caches hold their keys weakly (nothing outlives its DoFn or options) and fall back to Beam's own code for
objects that cannot be weakly referenced or hashed.
"""

from __future__ import annotations

import weakref

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import userstate

_BEAM_DOFN_SPECS = userstate.get_dofn_specs
_BEAM_VIEW_AS = PipelineOptions.view_as
_specs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_views: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _dofn_specs(dofn):
    try:
        specs = _specs.get(dofn)
    except TypeError:  # an unhashable or non-weakrefable DoFn: Beam's own walk, every time
        return _BEAM_DOFN_SPECS(dofn)
    if specs is None:
        specs = _specs[dofn] = _BEAM_DOFN_SPECS(dofn)
    return set(specs[0]), set(specs[1])


def _view_as(self, cls):
    try:
        views = _views.setdefault(self, {})
    except TypeError:
        return _BEAM_VIEW_AS(self, cls)
    view = views.get(cls)
    if view is None or view._all_options is not self._all_options or view._flags != self._flags:
        view = views[cls] = _BEAM_VIEW_AS(self, cls)
    return view


def install() -> None:
    """Put both caches in Beam (its callers look them up there at call time). Idempotent; ``pipeline_options``
    calls it in the launcher, warm workers when they start."""
    userstate.get_dofn_specs = _dofn_specs
    PipelineOptions.view_as = _view_as

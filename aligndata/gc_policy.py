"""Python's garbage collection around a command's start and end, in the ``aligndata`` program only.

A command first imports (Beam, gRPC, protobuf, numpy, Pillow, OpenCV) and builds what it keeps to its end (the
parser, a pipeline's graph): objects that live as long as the process, so a collection while they are made
only walks them, and the interpreter's teardown walks all of them again. Measured on curate, multi_processing
with 2 workers, 2-core VM: a 2,000-photo run's launcher spent 0.13 s in collections (two full ones, 72 ms), on
the path its warm workers wait on, 0.013 s with this policy; a 10-photo run took 0.26-0.49 s from its last
exit handler to its end, mostly the teardown's full collections, 0.04-0.06 s with the heap frozen.

So the program (not a command run inside another process: the tests, a notebook) starts with collection off
(``pause``); when the command's own work begins (``resume``: a pipeline about to be built, any other command at
once) it freezes what exists (``gc.freeze``: kept, never walked again) and turns collection back on, so the
work itself collects as usual; and it freezes again before exiting (``before_exit``; not once torch is loaded,
see there): the teardown still frees every object, without walking them for cycles first.
"""

from __future__ import annotations

import gc
import sys

_paused = False


def pause() -> None:
    """No collection until ``resume``: the program calls this first."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Collection on again, over what is made from now on, if ``pause`` turned it off; else nothing."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()


def before_exit() -> None:
    """The process ends next: what is left is freed without a walk for cycles (the program only; collection
    stays off if the command failed before ``resume``). Not after torch: a frozen heap keeps its cycles to the
    end, and the triton that PyPI's torch loads (nanobind bindings) then prints ~30 lines about "leaked"
    instances at exit (measured after `aligndata demo`); a torch command's teardown is not on anyone's path."""
    if "torch" not in sys.modules:
        gc.freeze()

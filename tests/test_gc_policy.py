"""gc_policy: collection off while the program starts, frozen and on again when its work begins, frozen at exit;
a command run inside another process (these tests, a notebook) leaves that process's collector alone."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap

from aligndata import cli


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_pause_then_resume_freezes_what_exists_and_collects_again():
    out = _run("""
        import gc
        from aligndata import gc_policy
        gc_policy.pause()
        paused = gc.isenabled()
        gc_policy.resume()
        print(paused, gc.isenabled(), gc.get_freeze_count() > 0)
        frozen = gc.get_freeze_count()
        gc_policy.resume()  # a second resume (the pipeline after the command) changes nothing
        print(gc.get_freeze_count() == frozen)
    """)
    assert out == ["False", "True", "True", "True"]


def test_resume_without_pause_changes_nothing():
    out = _run("""
        import gc
        from aligndata import gc_policy
        gc_policy.resume()
        print(gc.isenabled(), gc.get_freeze_count())
    """)
    assert out == ["True", "0"]


def test_the_program_ends_frozen_and_a_command_in_process_does_not():
    out = _run("""
        import gc, sys
        from aligndata import cli
        sys.argv = ["aligndata", "rules"]
        code = cli.main()
        print(code, gc.isenabled(), gc.get_freeze_count() > 0)
    """)
    assert out[-3:] == ["0", "True", "True"]

    frozen = gc.get_freeze_count()
    assert cli.main(["rules"]) == 0
    assert gc.isenabled() and gc.get_freeze_count() == frozen


def test_no_freeze_at_exit_after_torch():
    """A frozen heap keeps its cycles to the end; after torch (whose triton reports unfreed objects at exit)
    before_exit leaves the teardown's collection alone."""
    out = _run("""
        import gc
        from aligndata import gc_policy
        gc_policy.before_exit()
        print(gc.get_freeze_count() > 0)
        gc.unfreeze()
        import torch
        gc_policy.before_exit()
        print(gc.get_freeze_count())
    """)
    assert out == ["True", "0"]

"""Imports run one way: Apache Beam is loaded only by aligndata.pipeline (and, lazily, by io.storage when a URL
needs it), and the command line loads neither Beam nor requests until a command that needs them runs."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import aligndata

ROOT = Path(__file__).resolve().parents[1]


def _all_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(aligndata.__path__, "aligndata."))


def loaded_after(code: str) -> dict:
    """Which of Beam / requests are in sys.modules after running ``code`` in a fresh interpreter."""
    probe = code + "\nimport json, sys\nprint(json.dumps({m: m in sys.modules for m in ('apache_beam', 'requests')}))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


NON_PIPELINE = [m for m in _all_modules() if not m.startswith("aligndata.pipeline")]


def test_the_walk_covers_the_layers():
    for package in ("aligndata.cli", "aligndata.commands.extract", "aligndata.io.storage", "aligndata.io.inputs",
                    "aligndata.shards.writer", "aligndata.fetch.cache", "aligndata.extract.pages",
                    "aligndata.images.eval_index", "aligndata.inspect.summary", "aligndata.models.train",
                    "aligndata.models.synthetic", "aligndata.filters.frequency"):
        assert package in NON_PIPELINE


@pytest.mark.parametrize("module", NON_PIPELINE)
def test_no_beam_outside_pipeline(module):
    assert not loaded_after(f"import {module}")["apache_beam"], f"importing {module} loads apache_beam"


def test_cli_imports_neither_beam_nor_requests():
    assert loaded_after("import aligndata.cli") == {"apache_beam": False, "requests": False}
    # Building the whole parser (every command's options) loads neither either.
    assert loaded_after("from aligndata.cli import build_parser; build_parser()") == {
        "apache_beam": False, "requests": False}


def test_non_beam_commands_run_without_beam(tmp_path):
    """Writing shards (the trainer's synthetic world), inspecting them and validating them never load Beam."""
    shards = str(tmp_path / "shards")
    code = (f"from aligndata.models.synthetic import write_world\n"
            f"write_world({shards!r}, shards=2, per_shard=4)\n"
            f"from aligndata.cli import main\n"
            f"assert main(['inspect', 'summary', {shards!r}]) == 0\n"
            f"assert main(['inspect', 'validate', {shards!r}]) == 0\n")
    assert not loaded_after(code)["apache_beam"]

"""pyflakes over the project's Python: no unused imports, undefined names or redefinitions left behind.

A line that must import something only for its side effect says so with ``# noqa`` (pyflakes itself reads no
such comments), as tests that register a filesystem or probe an optional package do.
"""

from __future__ import annotations

from pathlib import Path

from pyflakes.api import checkRecursive
from pyflakes.reporter import Reporter

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ("aligndata", "tests", "benchmarks")


class _Collect(Reporter):
    def __init__(self):
        self.found: list[str] = []

    def unexpectedError(self, filename, message):
        self.found.append(f"{filename}: {message}")

    def syntaxError(self, filename, msg, lineno, offset, text):
        self.found.append(f"{filename}:{lineno}: {msg}")

    def flake(self, message):
        line = Path(message.filename).read_text(encoding="utf-8").splitlines()[message.lineno - 1]
        if "# noqa" not in line:
            self.found.append(str(message))


def test_no_pyflakes_warnings():
    reporter = _Collect()
    checkRecursive([str(ROOT / name) for name in CHECKED], reporter)
    assert reporter.found == [], "\n".join(reporter.found)


def test_the_check_sees_an_unused_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nimport sys  # noqa: F401 - kept on purpose\n")
    reporter = _Collect()
    checkRecursive([str(tmp_path)], reporter)
    assert len(reporter.found) == 1 and "'os' imported but unused" in reporter.found[0]

"""Progress of a long loop: a live tqdm bar on a terminal, a plain line every N seconds anywhere else.

A tqdm bar written to a file or a pipe (``make demo > log``) becomes thousands of carriage-return updates in
the log. ``progress_bar`` keeps tqdm for terminals and otherwise returns :class:`LineProgress`, which has the
part of tqdm's interface our loops use (``update``, ``set_postfix``, ``close``, a context manager) and prints
one ordinary line every ``interval`` seconds, and a last one on ``close``.

Plain Python (no Beam, no torch): any layer may import it. tqdm (the ``train`` extra) is imported only for a
terminal, and a terminal without tqdm gets the plain lines too.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Any

DEFAULT_INTERVAL_S = 30.0


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal (a closed or odd stream counts as not)."""
    isatty = getattr(stream, "isatty", None)
    if isatty is None:
        return False
    try:
        return bool(isatty())
    except (ValueError, OSError):  # closed, or a file object without a descriptor
        return False


def duration_text(seconds: float) -> str:
    """3725 -> "1h02m", 125 -> "2m05s", 42 -> "42s"."""
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class LineProgress:
    """Counts like a tqdm bar and prints ``desc: n/total unit (pct) | rate | ETA | postfix`` lines, no ``\\r``.

    A line is printed by the first ``update`` at least ``interval`` seconds after the previous line (or the
    start), and by ``close`` (only if something changed since the last line). ``clock`` is for tests.
    """

    def __init__(self, total: int | None = None, initial: int = 0, desc: str = "", unit: str = "it",
                 stream: IO[str] | None = None, interval: float = DEFAULT_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.n = initial
        self.desc = desc
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self._clock = clock
        self._start = clock()
        self._initial = initial
        self._last_line = self._start
        self._printed_n: int | None = None
        self._postfix = ""
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._clock() - self._last_line >= self.interval:
            self._print()

    def set_postfix(self, **values: Any) -> None:
        """Shown at the end of the next line (tqdm's ``key=value`` form); prints nothing by itself."""
        self._postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def format(self) -> str:
        elapsed = self._clock() - self._start
        done = self.n - self._initial
        rate = done / elapsed if elapsed > 0 else 0.0
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        parts = [f"{self.desc + ': ' if self.desc else ''}{count} {self.unit}"
                 + (f" ({100 * self.n / self.total:.0f}%)" if self.total else "")]
        parts.append(f"{duration_text(elapsed)} elapsed")
        if rate > 0:
            parts.append(f"{rate:.2f} {self.unit}/s" if rate < 10 else f"{rate:.0f} {self.unit}/s")
            if self.total and self.total > self.n:
                parts.append(f"ETA {duration_text((self.total - self.n) / rate)}")
        if self._postfix:
            parts.append(self._postfix)
        return " | ".join(parts)

    def _print(self) -> None:
        print(self.format(), file=self.stream, flush=True)
        self._last_line = self._clock()
        self._printed_n = self.n

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._printed_n != self.n:
                self._print()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(total: int | None = None, *, initial: int = 0, desc: str = "", unit: str = "it",
                 stream: IO[str] | None = None, interval: float = DEFAULT_INTERVAL_S):
    """A tqdm bar when ``stream`` (default stderr) is a terminal, else a :class:`LineProgress`."""
    stream = stream if stream is not None else sys.stderr
    if is_terminal(stream):
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=stream)
    return LineProgress(total=total, initial=initial, desc=desc, unit=unit, stream=stream, interval=interval)

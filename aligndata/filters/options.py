"""Options as data: one declaration per command-line option (flag, type, default, help), and the value types.

A rule's options are declared once, next to the rule (filters/registry.py), and the fetch options once in
fetch/options.py; the command line, the config object and the README's tables are all made from these
declarations. The value types turn bad values into one-line usage errors, never tracebacks.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable


def _number(text: str, kind):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") \
            from None


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def int_within(low: int, high: int) -> Callable[[str], int]:
    """A value type for integers in low..high."""

    def parse(text: str) -> int:
        value = _number(text, int)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be within {low}..{high}, got {value}")
        return value

    parse.__name__ = f"int_within_{low}_{high}"
    return parse


def positive_float(text: str) -> float:
    value = _number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def unit_interval(text: str) -> float:
    value = _number(text, float)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def fraction(text: str) -> float:
    value = _number(text, float)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


@dataclass(frozen=True)
class Option:
    """One command-line option and the config field it fills (``dest``, by default the flag in snake case).

    ``action`` is argparse's ("store_true" / "store_false" for switches). ``shown_default`` is how tables show
    the default when its repr would mislead (e.g. "2 x timeout + 5" for a computed default).
    """

    flag: str
    default: Any
    help: str
    type: Callable[[str], Any] | None = None
    dest: str = ""
    action: str | None = None
    metavar: str | None = None
    choices: tuple | None = None
    shown_default: str | None = None

    def __post_init__(self) -> None:
        if not self.dest:
            name = self.flag.lstrip("-")
            object.__setattr__(self, "dest", name[3:].replace("-", "_") if self.action == "store_false"
                               and name.startswith("no-") else name.replace("-", "_"))

    def add_to(self, parser) -> None:
        """Add this option to an argparse parser or argument group."""
        kwargs: dict[str, Any] = {"dest": self.dest, "help": self.help}
        if self.action:
            kwargs["action"] = self.action
        else:
            kwargs.update(default=self.default, type=self.type)
            if self.metavar:
                kwargs["metavar"] = self.metavar
            if self.choices:
                kwargs["choices"] = list(self.choices)
        parser.add_argument(self.flag, **kwargs)

    def default_text(self) -> str:
        if self.shown_default is not None:
            return self.shown_default
        if self.action == "store_true":
            return "off"
        if self.action == "store_false":
            return "on"
        return "none" if self.default is None else str(self.default)


def defaults(options) -> dict[str, Any]:
    """{dest: default} for a sequence of Options."""
    return {o.dest: o.default for o in options}


def options_dataclass(name: str, base: type, options, module: str) -> type:
    """A frozen dataclass: ``base``'s fields, then one field per Option (its dest and default), so a config
    class gets every declared option without restating it. ``module`` makes instances picklable."""
    fields = [(o.dest, Any, dataclasses.field(default=o.default)) for o in options]
    cls = dataclasses.make_dataclass(name, fields, bases=(base,), frozen=True)
    cls.__module__ = module  # (make_dataclass's own module= needs Python 3.12)
    return cls

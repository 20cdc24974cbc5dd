"""Shard file names: the index zero-padded to N digits (``--shard-digits``), ``NAME.tar`` and its companions.

5 digits (``00000.tar``) is img2dataset's default (its ``oom_shard_count``); DataComp's pools are named with 8
(``00000000.tar``), the default of its resharder's ``--shard-format '{:08d}.tar'``. Import-light on purpose: the
command line's option types use it.
"""

from __future__ import annotations

DEFAULT_SHARD_DIGITS = 5
MAX_SHARD_DIGITS = 12


def shard_name(index: int, digits: int = DEFAULT_SHARD_DIGITS) -> str:
    """Zero-padded shard name: 0 -> "00000" (digits 8: "00000000"); larger indexes simply get more digits."""
    if index < 0:
        raise ValueError(f"shard index must be >= 0, got {index}")
    if not 1 <= digits <= MAX_SHARD_DIGITS:
        raise ValueError(f"shard digits must be within 1..{MAX_SHARD_DIGITS}, got {digits}")
    return f"{index:0{digits}d}"


def digits_of(name: str) -> int | None:
    """The zero-padded width of a shard name ("00000000" -> 8), None when it is not all digits."""
    return len(name) if name.isdigit() and 1 <= len(name) <= MAX_SHARD_DIGITS else None

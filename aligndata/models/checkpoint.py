"""Atomic training checkpoints: ``RUN/checkpoints/step_00001234.pt``, written to a temp file and ``os.replace``d.

A crash while saving leaves the previous checkpoint intact and at most a hidden temp file (removed on the next
save); ``latest`` returns the newest checkpoint that actually loads, so a truncated file never blocks a resume.
"""

from __future__ import annotations

import logging
import os
import random
import re
import uuid

import numpy as np
import torch

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^step_(\d{8,})\.pt$")


def checkpoint_dir(run: str) -> str:
    return os.path.join(run, "checkpoints")


def path_for(run: str, step: int) -> str:
    return os.path.join(checkpoint_dir(run), f"step_{step:08d}.pt")


def save(run: str, step: int, payload: dict, keep: int = 2) -> str:
    directory = checkpoint_dir(run)
    os.makedirs(directory, exist_ok=True)
    final = path_for(run, step)
    temp = os.path.join(directory, f".step_{step:08d}.pt.tmp-{uuid.uuid4().hex}")
    try:
        torch.save(payload, temp)
        with open(temp, "rb+") as handle:  # reach the disk before the rename makes it the checkpoint
            os.fsync(handle.fileno())
        os.replace(temp, final)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise
    _prune(directory, keep)
    return final


def _prune(directory: str, keep: int) -> None:
    for name in os.listdir(directory):
        if ".tmp-" in name:
            os.remove(os.path.join(directory, name))
    steps = sorted(_steps(directory))
    for step in steps[:-keep] if keep > 0 else []:
        os.remove(os.path.join(directory, f"step_{step:08d}.pt"))


def _steps(directory: str) -> list[int]:
    if not os.path.isdir(directory):
        return []
    return [int(m.group(1)) for m in (NAME_RE.match(n) for n in os.listdir(directory)) if m]


def latest(run: str) -> tuple[str, dict] | None:
    """(path, payload) of the newest loadable checkpoint in ``run``, or None."""
    directory = checkpoint_dir(run)
    for step in sorted(_steps(directory), reverse=True):
        path = path_for(run, step)
        try:
            return path, torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # truncated/corrupt file: fall back to the previous one
            log.warning("checkpoint %s is unreadable (%s); trying an older one", path, err)
    return None


def has_checkpoint(run: str) -> bool:
    return bool(_steps(checkpoint_dir(run)))


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

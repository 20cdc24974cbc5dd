"""Contrastive losses: ALIGN's normalized softmax and UniCL's image-text-label loss.

Both take L2-normalised local embeddings and the model's temperature, gather the other ranks' embeddings *with
gradient* (``torch.distributed.nn.functional.all_gather``) and compute each rank's rows against every column of
the global batch (open_clip's ``local_loss``). Under DDP (which averages gradients over ranks) the gradients then
equal those of one process holding the whole global batch; the mean of the per-rank losses equals its loss.

The temperature divides the logits and is shared by both directions. transformers stores it as a raw parameter
initialised to 1.0 with no constraint; the loss clamps it to ``min_temperature`` (the trainer also clamps the
parameter after every step) so it can never reach zero or go negative. Log-probabilities come from
``log_softmax``, which stays finite for any finite logits (softmax().log() does not).
"""

from __future__ import annotations

import hashlib
import warnings

import torch
import torch.nn.functional as F
from torch import nn

MIN_TEMPERATURE = 1.0 / 100  # CLIP caps its logit scale at 100; the same bound here


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` over ranks (rank order); gradients flow back to every rank's slice."""
    rank, world = _dist_info()
    if world == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():  # deprecated in favour of a private API; still the public autograd gather
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(all_gather(x), dim=0)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    rank, world = _dist_info()
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    torch.distributed.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def _soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -sum_j targets_ij * log_softmax(logits)_ij (each target row sums to 1)."""
    return -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


class ContrastiveLoss(nn.Module):
    """Shared machinery: gather, logits, the two directions. Subclasses define the target matrix."""

    def __init__(self, label_smoothing: float = 0.1, gather: bool = True, min_temperature: float = MIN_TEMPERATURE):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing
        self.gather = gather
        self.min_temperature = min_temperature

    def forward(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor, temperature: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        if image_embeds.shape != text_embeds.shape:
            raise ValueError(f"image embeddings {tuple(image_embeds.shape)} and text embeddings "
                             f"{tuple(text_embeds.shape)} must have the same shape")
        rank, world = _dist_info() if self.gather else (0, 1)
        all_images = gather_with_grad(image_embeds) if world > 1 else image_embeds
        all_texts = gather_with_grad(text_embeds) if world > 1 else text_embeds
        all_labels = None
        if labels is not None:
            all_labels = gather_no_grad(labels) if world > 1 else labels
        # Compute in fp32 whatever the autocast dtype: bf16 logits lose the small differences that matter here.
        tau = temperature.float().clamp(min=self.min_temperature)
        logits_i2t = image_embeds.float() @ all_texts.float().t() / tau
        logits_t2i = text_embeds.float() @ all_images.float().t() / tau
        offset = rank * image_embeds.shape[0]
        targets = self.targets(image_embeds.shape[0], all_texts.shape[0], offset, labels, all_labels)
        targets = targets.to(device=logits_i2t.device, dtype=logits_i2t.dtype)
        if self.label_smoothing:
            targets = targets * (1.0 - self.label_smoothing) + self.label_smoothing / targets.shape[1]
        return _soft_cross_entropy(logits_i2t, targets) + _soft_cross_entropy(logits_t2i, targets)

    def targets(self, n_local, n_global, offset, labels, all_labels) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class AlignLoss(ContrastiveLoss):
    """ALIGN: L = L_i2t + L_t2i; the positive of row i is column offset+i (its own pair)."""

    def targets(self, n_local, n_global, offset, labels, all_labels) -> torch.Tensor:
        t = torch.zeros(n_local, n_global)
        t[torch.arange(n_local), offset + torch.arange(n_local)] = 1.0
        return t


class UniclLoss(ContrastiveLoss):
    """UniCL: targets are label equality, each row normalised by its number of positives.

    With every label distinct this is exactly AlignLoss (same smoothing). ``labels`` must be given (int64, one per
    sample, consistent across ranks: see ``caption_label``/``class_label``).
    """

    def targets(self, n_local, n_global, offset, labels, all_labels) -> torch.Tensor:
        if labels is None:
            raise ValueError("the unicl loss needs a label per sample")
        t = (labels.view(-1, 1) == all_labels.view(1, -1)).float()
        return t / t.sum(dim=1, keepdim=True)


def build_loss(name: str, label_smoothing: float = 0.1, gather: bool = True) -> ContrastiveLoss:
    if name == "align":
        return AlignLoss(label_smoothing, gather)
    if name == "unicl":
        return UniclLoss(label_smoothing, gather)
    raise ValueError(f"unknown loss {name!r} (choose align or unicl)")


# Label spaces for UniCL: classes are non-negative ids; each distinct caption hashes to a negative id, so identical
# captions share one label on every rank and never collide with a class.
_HASH_MASK = (1 << 62) - 1


def class_label(cls: int) -> int:
    if cls < 0:
        raise ValueError(f"class ids must be >= 0, got {cls}")
    return int(cls)


def caption_label(text: str) -> int:
    digest = hashlib.blake2b(text.strip().lower().encode("utf-8"), digest_size=8).digest()
    return -(int.from_bytes(digest, "little") & _HASH_MASK) - 1

"""Image and caption embeddings of a transformers dual encoder: the one place `evaluate` and `score` call the towers.

Any transformers model with ``get_image_features`` / ``get_text_features`` (our AlignModel, CLIP, ALIGN, SigLIP)
works. transformers 5 returns an output object whose ``pooler_output`` is the projected embedding; 4.x returns the
tensor itself: ``features`` accepts both. Tokenizing is separate from the text tower so data-loader workers can
tokenize while the main process runs the model.
"""

from __future__ import annotations

import torch

TEXT_INPUTS = ("input_ids", "attention_mask")  # what every text tower takes; BERT's token_type_ids are all zero


def features(output) -> torch.Tensor:
    """The embedding tensor of a ``get_*_features`` result (tensor in transformers 4, output object in 5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def tokenize(tokenizer, texts: list[str], max_tokens: int, padding: str = "longest") -> dict[str, torch.Tensor]:
    """Token tensors for ``texts``: the tokenizer's own inputs among ``TEXT_INPUTS`` (SigLIP's has no mask)."""
    tokens = tokenizer(list(texts), padding=padding, truncation=True, max_length=max_tokens, return_tensors="pt")
    return {name: tokens[name] for name in TEXT_INPUTS if name in tokens}


def image_features(model, inputs: dict[str, torch.Tensor], device) -> torch.Tensor:
    """Un-normalised float32 image embeddings of one batch (``inputs``: the image processor's tensors)."""
    batch = {name: value.to(device) for name, value in inputs.items()}
    return features(model.get_image_features(**batch)).float()


def text_features(model, tokens: dict[str, torch.Tensor], device) -> torch.Tensor:
    """Un-normalised float32 text embeddings of one batch of ``tokenize`` output."""
    batch = {name: value.to(device) for name, value in tokens.items()}
    return features(model.get_text_features(**batch)).float()


@torch.no_grad()
def embed_images(model, pixels: list[torch.Tensor], device, batch_size: int = 64) -> torch.Tensor:
    """L2-normalised embeddings of preprocessed images (CHW tensors), on the CPU."""
    chunks = []
    for start in range(0, len(pixels), batch_size):
        batch = torch.stack(pixels[start:start + batch_size])
        chunks.append(image_features(model, {"pixel_values": batch}, device))
    return torch.nn.functional.normalize(torch.cat(chunks), dim=-1).cpu()


@torch.no_grad()
def embed_texts(model, tokenizer, texts: list[str], device, max_tokens: int = 64, batch_size: int = 128):
    """L2-normalised embeddings of captions, on the CPU."""
    chunks = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenize(tokenizer, texts[start:start + batch_size], max_tokens)
        chunks.append(text_features(model, tokens, device))
    return torch.nn.functional.normalize(torch.cat(chunks), dim=-1).cpu()

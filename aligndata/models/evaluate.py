"""Evaluation of a dual encoder on shards: retrieval, zero-shot classification, k-NN.

- Retrieval: images are grouped by their source (json ``url``, else ``sha256``, else the image bytes), so a shard
  holding several captions of one image (COCO/Flickr style, one sample per caption) is scored the standard way:
  image->text R@k counts a hit when *any* of the image's captions is in the top k; text->image when the caption's
  image is.
- Zero-shot (labelled shards: ``.cls`` + class names): each class embedding is the mean of its L2-normalised
  prompt-template embeddings, renormalised (CLIP/ALIGN prompt ensembling); top-1 and top-5 accuracy.
- k-NN: leave-one-out over the labelled images (cosine similarity, majority vote of the k nearest, ties broken by
  summed similarity), or against a separate ``--knn-train-data`` set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from aligndata.models import transforms
from aligndata.models.data import DEFAULT_TEMPLATES
from aligndata.models.embedding import embed_images, embed_texts
from aligndata.shards.reader import Sample, iter_shards
from aligndata.shards.spec import resolve

log = logging.getLogger(__name__)

TASKS = ("retrieval", "zeroshot", "knn")


class EvalError(Exception):
    pass


@dataclass
class EvalSet:
    """Unique images and all captions, with caption -> image index and optional image labels."""

    pixels: list[torch.Tensor] = field(default_factory=list)
    labels: list[int | None] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    text_image: list[int] = field(default_factory=list)
    skipped: int = 0


def _image_id(sample: Sample, data: bytes) -> str:
    meta = sample.meta or {}
    for field_name in ("url", "sha256"):
        if meta.get(field_name):
            return f"{field_name}:{meta[field_name]}"
    return "bytes:" + hashlib.sha256(data).hexdigest()


def load_eval_set(urls: Iterable[str], image_size: int, resize_size: int, limit: int | None = None) -> EvalSet:
    out = EvalSet()
    index: dict[str, int] = {}
    for sample in iter_shards(urls):
        data = sample.image
        text = sample.strict_text
        if data is None:
            out.skipped += 1
            continue
        key = _image_id(sample, data)
        if key not in index:
            if limit is not None and len(index) >= limit:
                continue
            try:
                img = transforms.decode(data)
            except transforms.BadImage:
                out.skipped += 1
                continue
            index[key] = len(out.pixels)
            out.pixels.append(transforms.eval_image(img, image_size, resize_size))
            out.labels.append(sample.class_id)
        if text is not None:
            out.texts.append(text)
            out.text_image.append(index[key])
    return out


def retrieval_metrics(image_emb: torch.Tensor, text_emb: torch.Tensor, text_image: list[int],
                      ks=(1, 5, 10)) -> dict:
    """R@k in both directions; an image's hit is any of its captions in the top k."""
    sims = image_emb @ text_emb.t()  # images x texts
    owner = torch.tensor(text_image)
    result = {"images": image_emb.shape[0], "texts": text_emb.shape[0]}
    i2t_rank = sims.argsort(dim=1, descending=True)  # texts ranked per image
    t2i_rank = sims.t().argsort(dim=1, descending=True)
    own = owner[i2t_rank] == torch.arange(image_emb.shape[0]).view(-1, 1)
    has_caption = own.any(dim=1)
    for k in ks:
        hits_i2t = own[:, :k].any(dim=1)[has_caption].float().mean().item()
        hits_t2i = (t2i_rank[:, :k] == owner.view(-1, 1)).any(dim=1).float().mean().item()
        result[f"image_to_text_R@{k}"] = 100.0 * hits_i2t
        result[f"text_to_image_R@{k}"] = 100.0 * hits_t2i
    result["chance_text_to_image_R@1"] = 100.0 / image_emb.shape[0]
    return result


def class_embeddings(model, tokenizer, classnames: list[str], templates, device, max_tokens=64) -> torch.Tensor:
    rows = []
    for name in classnames:
        prompts = [t.format(name) for t in templates]
        emb = embed_texts(model, tokenizer, prompts, device, max_tokens)
        rows.append(torch.nn.functional.normalize(emb.mean(dim=0), dim=-1))
    return torch.stack(rows)


def zeroshot_metrics(image_emb: torch.Tensor, labels: torch.Tensor, class_emb: torch.Tensor) -> dict:
    logits = image_emb @ class_emb.t()
    top = logits.topk(min(5, class_emb.shape[0]), dim=1).indices
    return {"images": int(labels.numel()), "classes": int(class_emb.shape[0]),
            "top1": 100.0 * (top[:, 0] == labels).float().mean().item(),
            "top5": 100.0 * (top == labels.view(-1, 1)).any(dim=1).float().mean().item(),
            "chance_top1": 100.0 / class_emb.shape[0]}


def knn_metrics(query: torch.Tensor, query_labels: torch.Tensor, bank: torch.Tensor | None = None,
                bank_labels: torch.Tensor | None = None, k: int = 5) -> dict:
    """k-NN accuracy; without a bank, leave-one-out within ``query``."""
    leave_one_out = bank is None
    bank = query if bank is None else bank
    bank_labels = query_labels if bank_labels is None else bank_labels
    sims = query @ bank.t()
    if leave_one_out:
        sims.fill_diagonal_(-float("inf"))
    k = max(1, min(k, bank.shape[0] - (1 if leave_one_out else 0)))
    values, idx = sims.topk(k, dim=1)
    neighbour_labels = bank_labels[idx]
    correct = 0
    for row in range(query.shape[0]):
        votes: dict[int, tuple[int, float]] = {}
        for label, sim in zip(neighbour_labels[row].tolist(), values[row].tolist()):
            count, total = votes.get(label, (0, 0.0))
            votes[label] = (count + 1, total + sim)
        predicted = max(votes.items(), key=lambda item: item[1])[0]
        correct += int(predicted == int(query_labels[row]))
    return {"images": int(query.shape[0]), "k": k, "leave_one_out": leave_one_out,
            "top1": 100.0 * correct / max(1, query.shape[0])}


def evaluate_model(model, tokenizer, data: str, image_size: int, resize_size: int, tasks=TASKS,
                   classnames: list[str] | None = None, templates=DEFAULT_TEMPLATES, device="cpu",
                   max_tokens: int = 64, knn_data: str | None = None, k: int = 5, limit: int | None = None) -> dict:
    was_training = model.training
    model.eval()
    try:
        evalset = load_eval_set(resolve(data).paths, image_size, resize_size, limit)
        if not evalset.pixels:
            raise EvalError(f"no decodable image in {data}")
        image_emb = embed_images(model, evalset.pixels, device)
        result: dict = {"data": data, "skipped_samples": evalset.skipped}
        labelled = [i for i, label in enumerate(evalset.labels) if label is not None]
        if "retrieval" in tasks:
            if evalset.texts:
                text_emb = embed_texts(model, tokenizer, evalset.texts, device, max_tokens)
                result["retrieval"] = retrieval_metrics(image_emb, text_emb, evalset.text_image)
            else:
                result["retrieval"] = {"skipped": "no captions"}
        if "zeroshot" in tasks:
            if not labelled:
                result["zeroshot"] = {"skipped": "no .cls labels in the shards"}
            elif not classnames:
                result["zeroshot"] = {"skipped": "no class names (--classnames FILE)"}
            else:
                labels = torch.tensor([evalset.labels[i] for i in labelled])
                if int(labels.max()) >= len(classnames):
                    raise EvalError(f"class id {int(labels.max())} has no name: only {len(classnames)} class names")
                class_emb = class_embeddings(model, tokenizer, classnames, templates, device, max_tokens)
                result["zeroshot"] = zeroshot_metrics(image_emb[labelled], labels, class_emb)
        if "knn" in tasks:
            if len(labelled) < 2:
                result["knn"] = {"skipped": "fewer than 2 labelled images"}
            else:
                labels = torch.tensor([evalset.labels[i] for i in labelled])
                bank = bank_labels = None
                if knn_data:
                    train_set = load_eval_set(resolve(knn_data).paths, image_size, resize_size)
                    keep = [i for i, label in enumerate(train_set.labels) if label is not None]
                    bank = embed_images(model, [train_set.pixels[i] for i in keep], device)
                    bank_labels = torch.tensor([train_set.labels[i] for i in keep])
                result["knn"] = knn_metrics(image_emb[labelled], labels, bank, bank_labels, k)
        return result
    finally:
        model.train(was_training)


def load_trained(path: str, device="cpu"):
    """(model, tokenizer, settings) from a ``RUN/final`` directory, with transformers classes only."""
    from transformers import AlignModel, AutoTokenizer

    if not os.path.isdir(path):
        raise EvalError(f"--model {path}: not a directory (expected RUN/final from `aligndata train`)")
    try:
        model = AlignModel.from_pretrained(path, local_files_only=True).to(device)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as err:
        raise EvalError(f"--model {path}: cannot load an ALIGN model and tokenizer ({err})") from err
    settings = {"image_size": None, "resize_size": None, "max_tokens": 64}
    meta_path = os.path.join(path, "aligndata.json")
    if os.path.exists(meta_path):
        with open(meta_path, encoding="utf-8") as handle:
            settings.update(json.load(handle))
    if not settings["image_size"]:
        with open(os.path.join(path, "preprocessor_config.json"), encoding="utf-8") as handle:
            proc = json.load(handle)
        settings["image_size"] = proc["crop_size"]["height"]
        settings["resize_size"] = proc["size"]["height"]
    return model, tokenizer, settings

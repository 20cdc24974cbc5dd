"""A dual encoder to score with, loaded from a local path: what ``aligndata score --model M`` accepts.

M is one of:

* a run of ``aligndata train`` (``RUN`` or ``RUN/final``): our AlignModel, its WordPiece tokenizer, and ALIGN's eval
  transform (``transforms.eval_image``, the same as ``aligndata evaluate``);
* a transformers checkpoint directory with ``get_image_features`` / ``get_text_features`` (CLIP, ALIGN, SigLIP, ...),
  loaded with ``AutoModel`` and ``AutoProcessor`` (or ``AutoTokenizer`` + ``AutoImageProcessor``), strictly offline;
* an open_clip model (the ``openclip`` extra): ``open_clip:ARCH:PRETRAINED`` with ARCH a built-in architecture or a
  model-config ``.json`` and PRETRAINED a tag (open_clip downloads it) or a weights file; ``open_clip:local-dir:DIR``
  or a directory holding ``open_clip_config.json`` (open_clip's own folder format); ``open_clip:hf-hub:ORG/REPO``.

Every encoder has a ``model_id``, written in every score row so scores of different models are never mixed: an
open_clip tag is its own id (``open_clip:ViT-B-32:laion2b_s34b_b79k``); anything loaded from files is its name plus
the first 12 hex digits of a sha256 over the files that make the model (config, weights, tokenizer, processor:
names and contents), so two runs of one preset, whose files have the same names and sizes, still differ.

``Preprocess`` is the CPU half (decode-side: image transform, tokenizer) that data-loader workers run; the encoder
keeps the model and turns those tensors into L2-normalised embeddings.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field

import torch

from aligndata.models import embedding, transforms

log = logging.getLogger(__name__)

OPEN_CLIP_PREFIX = "open_clip:"
OPEN_CLIP_CONFIG = "open_clip_config.json"
# Files whose bytes decide a model's scores; hashed into its id (not READMEs, nor TF/Flax copies of the weights).
MODEL_FILE_SUFFIXES = (".json", ".txt", ".model", ".safetensors", ".bin", ".pt", ".pth", ".tiktoken")
ID_HEX = 12
FORMS = ("an `aligndata train` run (RUN or RUN/final), a transformers checkpoint directory, or "
         "open_clip:ARCH:PRETRAINED")


class ModelError(Exception):
    """M cannot be loaded as a dual encoder (the message names M and says why, on one line)."""


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


# ------------------------------------------------------------------------------------------------ model ids


def files_digest(paths: list[str], root: str | None = None) -> str:
    """sha256 over (name, size, bytes) of each file, in sorted name order; names relative to ``root``."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: os.path.relpath(p, root) if root else os.path.basename(p)):
        name = os.path.relpath(path, root) if root else os.path.basename(path)
        digest.update(f"{name}\0{os.path.getsize(path)}\0".encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:ID_HEX]


def model_files(directory: str) -> list[str]:
    return [os.path.join(directory, name) for name in sorted(os.listdir(directory))
            if name.endswith(MODEL_FILE_SUFFIXES) and not name.startswith(".")
            and os.path.isfile(os.path.join(directory, name))]


def directory_id(directory: str, name: str) -> str:
    return f"{name}@{files_digest(model_files(directory), directory)}"


# ------------------------------------------------------------------------------------------------ the encoders


class Preprocess:
    """The CPU half of an encoder, run in data-loader workers: one decoded image -> tensors (no batch dimension),
    a list of captions -> token tensors (batched)."""

    def image(self, img) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def texts(self, texts: list[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError


@dataclass
class AlignPreprocess(Preprocess):
    """Our runs: ALIGN's eval transform (resize, center crop) and the run's WordPiece tokenizer."""

    tokenizer: object
    image_size: int
    resize_size: int
    max_tokens: int

    def image(self, img) -> dict[str, torch.Tensor]:
        return {"pixel_values": transforms.eval_image(img, self.image_size, self.resize_size)}

    def texts(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return embedding.tokenize(self.tokenizer, texts, self.max_tokens)


@dataclass
class ProcessorPreprocess(Preprocess):
    """A transformers checkpoint: its own image processor and tokenizer, as its model card uses them."""

    image_processor: object
    tokenizer: object
    max_tokens: int
    padding: str = "longest"

    def image(self, img) -> dict[str, torch.Tensor]:
        inputs = self.image_processor(images=img, return_tensors="pt")
        return {name: value[0] for name, value in inputs.items() if isinstance(value, torch.Tensor)}

    def texts(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return embedding.tokenize(self.tokenizer, texts, self.max_tokens, self.padding)


@dataclass
class OpenClipPreprocess(Preprocess):
    transform: object
    tokenizer: object

    def image(self, img) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.transform(img)}

    def texts(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokenizer(list(texts))}


@dataclass
class Encoder:
    """A transformers dual encoder: ``get_image_features`` / ``get_text_features`` on the preprocessed tensors."""

    model_id: str
    kind: str
    model: torch.nn.Module
    preprocess: Preprocess
    settings: dict = field(default_factory=dict)  # recorded in the scores summary

    def to(self, device) -> Encoder:
        self.model.to(device).eval()
        return self

    def image_embeddings(self, inputs: dict[str, torch.Tensor], device) -> torch.Tensor:
        return torch.nn.functional.normalize(embedding.image_features(self.model, inputs, device), dim=-1)

    def text_embeddings(self, tokens: dict[str, torch.Tensor], device) -> torch.Tensor:
        return torch.nn.functional.normalize(embedding.text_features(self.model, tokens, device), dim=-1)


class OpenClipEncoder(Encoder):
    def image_embeddings(self, inputs, device) -> torch.Tensor:
        out = self.model.encode_image(inputs["pixel_values"].to(device))
        return torch.nn.functional.normalize(out.float(), dim=-1)

    def text_embeddings(self, tokens, device) -> torch.Tensor:
        out = self.model.encode_text(tokens["input_ids"].to(device))
        return torch.nn.functional.normalize(out.float(), dim=-1)


# ------------------------------------------------------------------------------------------------ loading


def load_encoder(spec: str) -> Encoder:
    """The encoder ``spec`` names (on the CPU, in eval mode); ModelError when it cannot be one."""
    if spec.startswith(OPEN_CLIP_PREFIX):
        return _open_clip(spec, spec[len(OPEN_CLIP_PREFIX):])
    path = os.path.expanduser(spec)
    if not os.path.exists(path):
        raise ModelError(f"--model {spec}: no such directory (models load from a local path only: {FORMS})")
    if not os.path.isdir(path):
        raise ModelError(f"--model {spec}: not a directory ({FORMS})")
    if os.path.isfile(os.path.join(path, OPEN_CLIP_CONFIG)):
        return _open_clip(spec, f"local-dir:{path}")
    if not os.path.isfile(os.path.join(path, "config.json")):
        if os.path.isfile(os.path.join(path, "final", "config.json")):
            path = os.path.join(path, "final")  # RUN -> RUN/final
        elif os.path.isdir(os.path.join(path, "checkpoints")):
            raise ModelError(f"--model {spec}: a training run without final/ (still training or stopped early; "
                             f"finish it with `aligndata train --resume`)")
        else:
            raise ModelError(f"--model {spec}: not a model directory (no config.json; expected {FORMS})")
    if os.path.isfile(os.path.join(path, "aligndata.json")):
        return _aligndata_run(spec, path)
    return _transformers_checkpoint(spec, path)


def _run_name(path: str) -> str:
    """``.../myrun/final`` -> ``myrun``: the name a person gave the run (RUN and RUN/final are one model)."""
    path = os.path.abspath(path)
    if os.path.basename(path) == "final":
        return os.path.basename(os.path.dirname(path))
    return os.path.basename(path)


def _aligndata_run(spec: str, path: str) -> Encoder:
    from aligndata.models.evaluate import EvalError, load_trained

    try:
        model, tokenizer, settings = load_trained(path)
    except (EvalError, OSError, ValueError, KeyError) as err:
        raise ModelError(f"--model {spec}: {err}") from err
    preprocess = AlignPreprocess(tokenizer, settings["image_size"], settings["resize_size"], settings["max_tokens"])
    return Encoder(directory_id(path, _run_name(path)), "aligndata", model.eval(), preprocess,
                   {"path": path, "image_size": settings["image_size"], "resize_size": settings["resize_size"],
                    "max_tokens": settings["max_tokens"]})


def _transformers_checkpoint(spec: str, path: str) -> Encoder:
    from transformers import AutoModel

    try:
        model = AutoModel.from_pretrained(path, local_files_only=True)
    except Exception as err:  # transformers raises OSError, ValueError, KeyError, ... for a broken directory
        raise ModelError(f"--model {spec}: cannot load a transformers model ({_one_line(err)})") from err
    if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
        raise ModelError(f"--model {spec}: {type(model).__name__} has no get_image_features/get_text_features "
                         f"(not an image-text dual encoder)")
    image_processor, tokenizer = _processors(spec, path)
    max_tokens, padding = _text_settings(model, tokenizer)
    preprocess = ProcessorPreprocess(image_processor, tokenizer, max_tokens, padding)
    return Encoder(directory_id(path, os.path.basename(os.path.abspath(path))), "transformers", model.eval(),
                   preprocess, {"path": path, "class": type(model).__name__,
                                "image_processor": type(image_processor).__name__, "max_tokens": max_tokens,
                                "padding": padding})


def _processors(spec: str, path: str):
    """(image processor, tokenizer) saved beside the model: one AutoProcessor, else the two saved separately."""
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    try:
        processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        image_processor = getattr(processor, "image_processor", None)
        tokenizer = getattr(processor, "tokenizer", None)
        if image_processor is not None and tokenizer is not None:
            return image_processor, tokenizer
    except Exception as err:  # no processor_config / a processor class that wants other files: try the parts
        log.debug("AutoProcessor failed for %s: %s", path, err)
    try:
        return (AutoImageProcessor.from_pretrained(path, local_files_only=True),
                AutoTokenizer.from_pretrained(path, local_files_only=True))
    except Exception as err:
        raise ModelError(f"--model {spec}: no image processor and tokenizer saved beside the model "
                         f"({_one_line(err)})") from err


def _text_settings(model, tokenizer) -> tuple[int, str]:
    """(max tokens, padding). SigLIP pools the last position, so it must see max-length padding (its model card)."""
    config = model.config
    text_config = getattr(config, "text_config", config)
    limits = [getattr(text_config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    usable = [int(n) for n in limits if isinstance(n, int) and 0 < n < 1_000_000]
    max_tokens = min(usable) if usable else 77
    if config.model_type == "align":
        max_tokens = min(max_tokens, 64)  # ALIGN's text length (AlignProcessor's default)
    padding = "max_length" if config.model_type.startswith("siglip") else "longest"
    return max_tokens, padding


def _open_clip(spec: str, rest: str) -> Encoder:
    try:
        import open_clip
    except ImportError as err:
        raise ModelError(f"--model {spec}: open_clip models need the openclip extra "
                         f"(pip install 'aligndata[openclip]')") from err
    arch, _, pretrained = rest.partition(":")
    hashed: list[str] = []
    if arch in ("local-dir", "hf-hub"):
        name, weights = f"{arch}:{pretrained}", None
        if arch == "local-dir":
            if not os.path.isfile(os.path.join(pretrained, OPEN_CLIP_CONFIG)):
                raise ModelError(f"--model {spec}: {pretrained} holds no {OPEN_CLIP_CONFIG}")
            hashed = model_files(pretrained)
            label = f"open_clip:local-dir:{os.path.basename(os.path.abspath(pretrained))}"
        else:
            label = f"open_clip:{name}"
    else:
        if arch.endswith(".json"):
            if not os.path.isfile(arch):
                raise ModelError(f"--model {spec}: no such model-config file {arch}")
            open_clip.add_model_config(arch)
            hashed.append(arch)
            arch_name = os.path.splitext(os.path.basename(arch))[0]
        elif arch in open_clip.list_models():
            arch_name = arch
        else:
            raise ModelError(f"--model {spec}: {arch!r} is not an open_clip architecture (open_clip.list_models() "
                             f"names them) nor a model-config .json")
        if not pretrained:
            raise ModelError(f"--model {spec}: give the weights, open_clip:ARCH:PRETRAINED (a tag from "
                             f"open_clip.list_pretrained() or a weights file); random weights score nothing")
        name, weights = arch_name, pretrained
        if os.path.isfile(pretrained):
            hashed.append(pretrained)
            label = f"open_clip:{arch_name}:{os.path.basename(pretrained)}"
        elif os.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors")):
            raise ModelError(f"--model {spec}: no such weights file {pretrained}")
        else:
            label = f"open_clip:{arch_name}:{pretrained}"  # a tag: open_clip pins its weights by name
    try:
        model, _, transform = open_clip.create_model_and_transforms(name, pretrained=weights)
        tokenizer = open_clip.get_tokenizer(name)
    except Exception as err:  # unknown tag, weights that do not fit the architecture, no network for a download
        raise ModelError(f"--model {spec}: open_clip cannot load it ({_one_line(err)})") from err
    model_id = f"{label}@{files_digest(hashed)}" if hashed else label
    return OpenClipEncoder(model_id, "open_clip", model.eval(), OpenClipPreprocess(transform, tokenizer),
                           {"open_clip": name, "pretrained": weights})

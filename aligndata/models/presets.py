"""Dual-encoder presets, built as transformers ``AlignConfig`` objects and initialised randomly (never a hub).

Vision: ``AlignVisionModel`` (EfficientNet, global average pooling, no 1x1 head conv), so the image embedding width
is the last stage's channel count after width scaling. Text: ``AlignTextModel`` (BERT), whose [CLS] state is
projected by ``AlignModel.text_projection`` to ``projection_dim``. AlignModel never projects the image side, so
``projection_dim`` must equal the pooled vision width; ``align_config`` computes it rather than trusting a number.

| preset  | vision                          | text                                  | embed | image (resize/crop) |
|---------|---------------------------------|---------------------------------------|-------|---------------------|
| tiny    | EfficientNet w0.25 d0.25, 5 st. | BERT 2 layers, 64 wide                |   32  |   72 / 64           |
| small   | EfficientNet w0.5 d0.5          | BERT-tiny (2 layers, 128)             |  160  |  144 / 128          |
| b3-mini | EfficientNet-B3 (w1.2 d1.4)     | BERT-mini (4 layers, 256)             |  384  |  346 / 289          |
| base    | EfficientNet-B7 (w2.0 d3.1)     | BERT-base (12 layers, 768)            |  640  |  346 / 289          |

``b3-mini`` is the ALIGN paper's ablation scale; ``base`` is the paper's model (kakaobrain/align-base's shape).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

B0_IN = (32, 16, 24, 40, 80, 112, 192)
B0_OUT = (16, 24, 40, 80, 112, 192, 320)
B0_KERNELS = (3, 3, 5, 3, 5, 5, 3)
B0_STRIDES = (1, 2, 2, 2, 1, 2, 1)
B0_REPEATS = (1, 2, 2, 3, 3, 4, 1)
B0_EXPAND = (1, 6, 6, 6, 6, 6, 6)


# Training defaults a preset brings (an explicit --optimizer/--lr/--temperature-init wins). The paper's recipe
# (LAMB, lr 1e-3, a learned temperature initialised at 1.0) is for batches of 16k over hundreds of thousands of
# steps; on the small presets' short CPU runs it learns nothing: `train --preset tiny --steps 100 --batch-size 32`
# on the demo's curated shards stayed at chance (2 ln 32 = 6.93) for all 100 steps, and LAMB at 1e-3 did with a
# temperature of 0.07 too. Measured at step 100 (benchmarks/RESULTS.md, "Training defaults"): AdamW 2e-3 with
# the temperature at 0.1 reached 5.86; LAMB 1e-2 / 5e-3 at 0.07 reached 6.02 / 6.48. So tiny and small default to
# the demo's recipe, and the paper-scale presets keep the paper's.
PAPER_RECIPE = {"optimizer": "lamb", "lr": 1e-3, "temperature_init": 1.0}
SHORT_RUN_RECIPE = {"optimizer": "adamw", "lr": 2e-3, "temperature_init": 0.1}


@dataclass(frozen=True)
class Preset:
    name: str
    vision: dict
    text: dict
    image_size: int
    resize_size: int
    description: str = ""
    extra: dict = field(default_factory=dict)
    recipe: dict = field(default_factory=lambda: dict(PAPER_RECIPE))  # the training defaults above


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        "tiny",
        # Five of B0's seven stages (stride 16 overall): enough for 32-64 px images, seconds per CPU step.
        vision=dict(width_coefficient=0.25, depth_coefficient=0.25, in_channels=B0_IN[:5], out_channels=B0_OUT[:5],
                    kernel_sizes=B0_KERNELS[:5], strides=B0_STRIDES[:5], num_block_repeats=B0_REPEATS[:5],
                    expand_ratios=(1, 3, 3, 3, 3), drop_connect_rate=0.0),
        # 512 positions (BERT's) as in every preset: transformers' zero-shot pipeline never truncates (5.24 drops
        # its tokenizer_kwargs), so a class label must fit the position table; 128 made a 130-token label fail.
        text=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
        image_size=64, resize_size=72, description="tests and demos: a few M params, CPU friendly",
        recipe=dict(SHORT_RUN_RECIPE),
    ),
    "small": Preset(
        "small",
        vision=dict(width_coefficient=0.5, depth_coefficient=0.5, drop_connect_rate=0.1),
        text=dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512),
        image_size=128, resize_size=144, description="laptop experiments: EfficientNet-B0/2 + BERT-tiny",
        recipe=dict(SHORT_RUN_RECIPE),
    ),
    "b3-mini": Preset(
        "b3-mini",
        vision=dict(width_coefficient=1.2, depth_coefficient=1.4, drop_connect_rate=0.2),
        text=dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
        image_size=289, resize_size=346, description="the ALIGN paper's ablation scale: EfficientNet-B3 + BERT-mini",
    ),
    "base": Preset(
        "base",
        vision=dict(width_coefficient=2.0, depth_coefficient=3.1, drop_connect_rate=0.2),
        text=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
        image_size=289, resize_size=346, description="the ALIGN paper's model: EfficientNet-B7 + BERT-base, 640-d",
    ),
}


def round_filters(width_coefficient: float, channels: int, divisor: int = 8) -> int:
    """EfficientNet's channel rounding (the same formula transformers' AlignVision uses)."""
    channels *= width_coefficient
    new_dim = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    if new_dim < 0.9 * channels:  # never round down by more than 10%
        new_dim += divisor
    return int(new_dim)


def vision_width(vision_config) -> int:
    """The pooled image embedding width of an AlignVisionConfig: the last stage's scaled channel count."""
    return round_filters(vision_config.width_coefficient, vision_config.out_channels[-1],
                         vision_config.depth_divisor)


def align_config(preset: str | Preset, vocab_size: int, image_size: int | None = None, max_tokens: int = 64,
                 pad_token_id: int = 0, temperature_init: float = 1.0):
    """An ``AlignConfig`` for ``preset`` with a text vocabulary of ``vocab_size`` tokens."""
    from transformers import AlignConfig, AlignTextConfig, AlignVisionConfig

    p = PRESETS[preset] if isinstance(preset, str) else preset
    size = image_size or p.image_size
    vision = AlignVisionConfig(image_size=size, **p.vision)
    # AlignVisionModel pools with AvgPool2d(kernel_size=hidden_dim, ceil_mode=True): global only while the kernel
    # covers the final feature map, so make it at least the image size (the feature map is always smaller).
    vision.hidden_dim = max(vision.hidden_dim, size)
    text_kwargs = dict(p.text)
    text_kwargs["max_position_embeddings"] = max(text_kwargs.get("max_position_embeddings", 512), max_tokens)
    text = AlignTextConfig(vocab_size=vocab_size, pad_token_id=pad_token_id, **text_kwargs)
    return AlignConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                       projection_dim=vision_width(vision), temperature_init_value=temperature_init)


def build_model(preset: str | Preset, vocab_size: int, image_size: int | None = None, max_tokens: int = 64,
                seed: int | None = None, pad_token_id: int = 0, temperature_init: float = 1.0):
    """A randomly initialised ``transformers.AlignModel`` for ``preset``."""
    import torch
    from transformers import AlignModel

    if seed is not None:
        torch.manual_seed(seed)
    config = align_config(preset, vocab_size, image_size, max_tokens, pad_token_id, temperature_init)
    model = AlignModel(config)
    return model


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def stride(preset: str | Preset) -> int:
    p = PRESETS[preset] if isinstance(preset, str) else preset
    strides = p.vision.get("strides", B0_STRIDES)
    return 2 * math.prod(strides)

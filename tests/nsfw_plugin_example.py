"""An NSFW plugin for tests (`--nsfw nsfw_plugin_example:redness`): scores an image by how red it is."""

from PIL import ImageStat


def redness(image) -> float:
    r, g, b = ImageStat.Stat(image.convert("RGB")).mean
    return max(0.0, (r - (g + b) / 2) / 255)

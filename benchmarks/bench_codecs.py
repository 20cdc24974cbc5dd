"""Decode, resize and encode paths per input format and size, one core: which libraries the image stage uses.

    .venv/bin/python benchmarks/bench_codecs.py [--photos 30] [--rounds 5]
        (needs opencv-python-headless, simplejpeg and pyvips-binary + pyvips installed beside aligndata)

Inputs: distinct JPEGs made from the real COCO photos exactly as bench_image_stage.py makes them (5% crops,
flips, quality 80-92) at 640x480 (COCO's own size) and upscaled to 1024x768 and 2048x1536, where libjpeg's
DCT-scaled decoding (1/2, 1/4, 1/8) applies; and the same pixels as PNG (zlib 6), WebP (quality 90) and a
two-frame GIF (adaptive palette; the first frame is the one kept). The task is the default curate chain:
keep_ratio to a 346 px shorter side with the area filter, JPEG quality 95 (4:2:0, as Pillow writes it).

Every library runs on one thread (OpenCV's setNumThreads(1), VIPS_CONCURRENCY=1, libvips' operation cache
off). Each figure is CPU ms per image of the whole process (time.process_time, so libvips' own threads count), the minimum over ``--rounds`` passes
over all photos, the candidates interleaved image by image (the machine is shared: a load change hits all
of them alike, and the minimum is the least disturbed pass). The quality columns are
PSNR in dB against aligndata.images.resample_reference (float64, exact area / antialiased kernels) of the
same decoded pixels, mean over the 640x480 photos.
"""

from __future__ import annotations

import os

os.environ.setdefault("VIPS_CONCURRENCY", "1")  # before pyvips loads libvips

import argparse
import io
import statistics
import time

import cv2
import numpy as np
import pyvips
import simplejpeg
from bench_image_stage import photo_jpegs
from common import emit
from PIL import Image

from aligndata.images.encode_pixels import encode_pixels
from aligndata.images.fast_decode import decode_pixels
from aligndata.images.geometry import plan_resize
from aligndata.images.resample_reference import psnr, reference_resize
from aligndata.images.resize_pixels import resize_pixels

cv2.setNumThreads(1)
pyvips.cache_set_max(0)  # otherwise a second pass over the same bytes is served from libvips' cache

TARGET = 346
QUALITY = 95
SIZES = ((640, 480), (1024, 768), (2048, 1536))
FORMATS = ("jpeg", "png", "webp", "gif")


# ------------------------------------------------------------------------------------------------- inputs


def inputs(n: int, size: tuple[int, int]) -> dict[str, list[bytes]]:
    jpegs = list(photo_jpegs(n, seed=1, size=size))
    out = {"jpeg": jpegs, "png": [], "webp": [], "gif": []}
    for data in jpegs:
        img = Image.open(io.BytesIO(data)).convert("RGB")
        for fmt, kwargs in (("png", {"compress_level": 6}), ("webp", {"quality": 90})):
            buf = io.BytesIO()
            img.save(buf, fmt.upper(), **kwargs)
            out[fmt].append(buf.getvalue())
        frames = [img.quantize(256), img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).quantize(256)]
        buf = io.BytesIO()
        frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
        out["gif"].append(buf.getvalue())
    return out


def target_size(width: int, height: int) -> tuple[int, int]:
    scale = TARGET / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def power_of_two_scale(width: int, height: int) -> int:
    """Pillow's draft rule for a (346, 346) request: the largest of 8, 4, 2, 1 keeping both sides >= 346."""
    scale = min(width // TARGET, height // TARGET)
    return next((s for s in (8, 4, 2, 1) if scale >= s), 1)


# ----------------------------------------------------------------------------------------------- decoders


def pillow_decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img.convert("RGB")


def pillow_draft_decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    if img.format == "JPEG":
        img.draft("RGB", (TARGET, TARGET))
    img.load()
    return img.convert("RGB")


def cv2_decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)


_CV2_REDUCED = {1: cv2.IMREAD_COLOR_RGB, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                8: cv2.IMREAD_REDUCED_COLOR_8}


def cv2_reduced_decode(data: bytes) -> np.ndarray:
    width, height = simplejpeg.decode_jpeg_header(data)[1::-1]
    out = cv2.imdecode(np.frombuffer(data, np.uint8), _CV2_REDUCED[power_of_two_scale(width, height)])
    return out if out.ndim == 3 and power_of_two_scale(width, height) == 1 else out[:, :, ::-1]  # reduced: BGR


def simplejpeg_decode(data: bytes) -> np.ndarray:
    return simplejpeg.decode_jpeg(data, colorspace="RGB")


def simplejpeg_scaled_decode(data: bytes) -> np.ndarray:
    height, width = simplejpeg.decode_jpeg_header(data)[:2]
    scale = power_of_two_scale(width, height)
    return simplejpeg.decode_jpeg(data, colorspace="RGB", min_factor=scale,
                                  min_width=-(-width // scale), min_height=-(-height // scale))


def vips_decode(data: bytes) -> np.ndarray:
    return pyvips.Image.new_from_buffer(data, "", access="sequential").numpy()


def vips_shrink_decode(data: bytes) -> np.ndarray:
    head = pyvips.Image.new_from_buffer(data, "")
    scale = power_of_two_scale(head.width, head.height)
    return pyvips.Image.jpegload_buffer(data, shrink=scale, access="sequential").numpy()


def vips_decode_gif(data: bytes) -> np.ndarray:
    img = pyvips.Image.new_from_buffer(data, "", access="sequential")
    return (img[:3] if img.bands == 4 else img).numpy()  # GIFs load as RGBA


DECODERS = {
    "pillow": (pillow_decode, FORMATS),
    "pillow_draft": (pillow_draft_decode, ("jpeg",)),
    "opencv": (cv2_decode, FORMATS),
    "opencv_reduced": (cv2_reduced_decode, ("jpeg",)),
    "simplejpeg": (simplejpeg_decode, ("jpeg",)),
    "simplejpeg_scaled": (simplejpeg_scaled_decode, ("jpeg",)),
    "pyvips": (vips_decode, ("jpeg", "png", "webp")),
    "pyvips_gif": (vips_decode_gif, ("gif",)),
    "pyvips_shrink": (vips_shrink_decode, ("jpeg",)),
}


# ------------------------------------------------------------------------------------------------ resizers

_PIL_FILTERS = {"area": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR,
                "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}
_CV2_FILTERS = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC,
                "lanczos": cv2.INTER_LANCZOS4}
_VIPS_KERNELS = {"bilinear": "linear", "bicubic": "cubic", "lanczos": "lanczos3"}


def pillow_resize(filter_name: str):
    def resize(img: Image.Image) -> Image.Image:
        size = target_size(*img.size)
        if filter_name == "area":
            return img.resize(size, _PIL_FILTERS[filter_name])
        return img.resize(size, _PIL_FILTERS[filter_name], reducing_gap=2.0)  # what images/process.py does
    return resize


def cv2_resize(filter_name: str):
    def resize(pixels: np.ndarray) -> np.ndarray:
        return cv2.resize(pixels, target_size(pixels.shape[1], pixels.shape[0]),
                          interpolation=_CV2_FILTERS[filter_name])
    return resize


def vips_resize(filter_name: str):
    def resize(pixels: np.ndarray) -> np.ndarray:
        height, width = pixels.shape[:2]
        new_w, new_h = target_size(width, height)
        img = pyvips.Image.new_from_array(pixels, interpretation="srgb")
        return img.resize(new_w / width, vscale=new_h / height, kernel=_VIPS_KERNELS[filter_name]).numpy()
    return resize


RESIZERS = {f"pillow_{f}": ("pil", pillow_resize(f), f) for f in _PIL_FILTERS}
RESIZERS.update({f"opencv_{f}": ("array", cv2_resize(f), f) for f in _CV2_FILTERS})
RESIZERS.update({f"pyvips_{f}": ("array", vips_resize(f), f) for f in _VIPS_KERNELS})
RESIZERS["chosen_area (aligndata now)"] = ("array", lambda p: resize_pixels(
    p, plan_resize(p.shape[1], p.shape[0], "keep_ratio", TARGET)), "area")


# ------------------------------------------------------------------------------------------------ encoders


def pillow_encode(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=QUALITY)
    return buf.getvalue()


def cv2_encode(pixels: np.ndarray) -> bytes:
    ok, out = cv2.imencode(".jpg", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
    return out.tobytes()


def simplejpeg_encode(pixels: np.ndarray) -> bytes:
    return simplejpeg.encode_jpeg(pixels, quality=QUALITY, colorspace="RGB", colorsubsampling="420")


def vips_encode(pixels: np.ndarray) -> bytes:
    img = pyvips.Image.new_from_array(pixels, interpretation="srgb")
    return img.jpegsave_buffer(Q=QUALITY, subsample_mode="on", keep="none")


ENCODERS = {"pillow": ("pil", pillow_encode), "opencv": ("array", cv2_encode),
            "simplejpeg": ("array", simplejpeg_encode), "pyvips": ("array", vips_encode)}


# ------------------------------------------------------------------------------------- whole paths (area)


def path_pillow(draft: bool):
    decode = pillow_draft_decode if draft else pillow_decode
    resize = pillow_resize("area")
    return lambda data: pillow_encode(resize(decode(data)))


def path_arrays(decode, encode):
    resize = cv2_resize("area")
    return lambda data: encode(resize(decode(data)))


def path_vips_shrink(data: bytes) -> bytes:
    head = pyvips.Image.new_from_buffer(data, "")
    scale = power_of_two_scale(head.width, head.height) if head.get("vips-loader").startswith("jpeg") else 1
    img = (pyvips.Image.jpegload_buffer(data, shrink=scale, access="sequential") if scale > 1
           else pyvips.Image.new_from_buffer(data, "", access="sequential"))
    if img.bands == 4:
        img = img[:3]
    new_w, new_h = target_size(img.width, img.height)
    img = img.resize(new_w / img.width, vscale=new_h / img.height, kernel="linear")
    return img.jpegsave_buffer(Q=QUALITY, subsample_mode="on", keep="none")


def path_chosen(data: bytes) -> bytes:
    """What images/process.py does now (area filter, keep_ratio 346, JPEG q95), pHash and checks left out."""
    decoded = decode_pixels(data, draft_size=(TARGET, TARGET))
    height, width = decoded.pixels.shape[:2]
    return encode_pixels(resize_pixels(decoded.pixels, plan_resize(width, height, "keep_ratio", TARGET)), "jpg",
                         QUALITY)


def paths(fmt: str) -> dict:
    jpeg = fmt == "jpeg"
    out = {
        "chosen (aligndata now: simplejpeg at draft scale / Pillow, opencv <2x bilinear or area, opencv)": path_chosen,
        "pillow": path_pillow(False),
        "pillow_draft (aligndata before)": path_pillow(True) if jpeg else None,
        "opencv (img2dataset's)": path_arrays(cv2_decode, cv2_encode),
        "opencv_reduced + opencv": path_arrays(cv2_reduced_decode, cv2_encode) if jpeg else None,
        "simplejpeg + opencv area + simplejpeg": path_arrays(simplejpeg_decode, simplejpeg_encode) if jpeg else None,
        "simplejpeg_scaled + opencv area + simplejpeg": (path_arrays(simplejpeg_scaled_decode, simplejpeg_encode)
                                                         if jpeg else None),
        "simplejpeg_scaled + opencv area + opencv": (path_arrays(simplejpeg_scaled_decode, cv2_encode)
                                                     if jpeg else None),
        "opencv + opencv area + simplejpeg": path_arrays(cv2_decode, simplejpeg_encode),
        "pyvips shrink-on-load + linear + pyvips": path_vips_shrink,
    }
    return {k: v for k, v in out.items() if v is not None}


# ------------------------------------------------------------------------------------------------- timing


def per_image_ms(candidates: dict, rounds: int) -> dict[str, float]:
    """CPU ms per image of each candidate ``{name: (fn, items)}``, interleaved: every image goes through every
    candidate before the next image, so a load change on the shared machine hits all of them alike. The figure is
    the minimum over rounds of the mean per image."""
    clock = time.process_time
    for fn, inputs_ in candidates.values():
        fn(inputs_[0])  # warm up (imports, lazy tables)
    best = {name: float("inf") for name in candidates}
    count = len(next(iter(candidates.values()))[1])
    for _ in range(rounds):
        spent = dict.fromkeys(candidates, 0.0)
        for i in range(count):
            for name, (fn, inputs_) in candidates.items():
                start = clock()
                fn(inputs_[i])
                spent[name] += clock() - start
        for name, total in spent.items():
            best[name] = min(best[name], total / count)
    return {name: round(value * 1000, 3) for name, value in best.items()}


def measure(n: int, rounds: int) -> dict:
    results = {}
    for size in SIZES:
        count = n if size[0] <= 1024 else max(5, n // 3)
        data = inputs(count, size)
        label = f"{size[0]}x{size[1]}"
        by_format = {}
        for fmt in FORMATS:
            items = data[fmt]
            one = {"input_kb": round(statistics.mean(len(d) for d in items) / 1024, 1)}
            one["decode"] = per_image_ms({name: (fn, items) for name, (fn, formats) in DECODERS.items()
                                          if fmt in formats}, rounds)
            one["decode_resize_encode"] = per_image_ms({name: (fn, items) for name, fn in paths(fmt).items()},
                                                       rounds)
            by_format[fmt] = one
            print(label, fmt, one, flush=True)
        # resize and encode do not depend on the input format: measured once per size, on the decoded JPEGs
        pil_images = [pillow_decode(d) for d in data["jpeg"]]
        arrays = [np.asarray(img) for img in pil_images]
        by_format["resize"] = per_image_ms({name: (fn, pil_images if kind == "pil" else arrays)
                                            for name, (kind, fn, _f) in RESIZERS.items()}, rounds)
        small_pil = [pillow_resize("area")(img) for img in pil_images]
        small = [np.asarray(img) for img in small_pil]
        by_format["encode_jpeg_q95"] = per_image_ms({name: (fn, small_pil if kind == "pil" else small)
                                                     for name, (kind, fn) in ENCODERS.items()}, rounds)
        by_format["array_conversion"] = per_image_ms({
            "np.asarray(PIL RGB)": (np.asarray, pil_images),
            "Image.fromarray(RGB)": (Image.fromarray, arrays),
        }, rounds)
        print(label, {k: by_format[k] for k in ("resize", "encode_jpeg_q95", "array_conversion")}, flush=True)
        results[label] = by_format
    return results


def quality(n: int) -> dict:
    """PSNR of each resize candidate against the float64 reference of the same filter, 640x480 photos."""
    arrays = [cv2_decode(d) for d in photo_jpegs(n, seed=1, size=(640, 480))]
    scores: dict[str, list[float]] = {}
    for pixels in arrays:
        width, height = target_size(pixels.shape[1], pixels.shape[0])
        refs = {}
        for name, (kind, fn, filter_name) in RESIZERS.items():
            if filter_name not in refs:
                refs[filter_name] = reference_resize(pixels, width, height, filter_name)
            out = np.asarray(fn(Image.fromarray(pixels) if kind == "pil" else pixels))
            scores.setdefault(name, []).append(psnr(out, refs[filter_name]))
    return {name: {"mean_db": round(statistics.mean(v), 2), "min_db": round(min(v), 2)}
            for name, v in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=int, default=30, help="photos per size (a third of them at 2048x1536)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    versions = {"pillow": Image.__version__, "opencv": cv2.__version__, "simplejpeg": simplejpeg.__version__,
                "libvips": f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}"}
    psnr_db = quality(min(args.photos, 20))
    print("psnr", psnr_db, flush=True)
    emit("codecs", {
        "versions": versions,
        "photos_per_size": args.photos,
        "rounds": args.rounds,
        "unit": "CPU ms per image (process CPU time, every thread), one worker thread, minimum over rounds",
        "load_average_at_start": os.getloadavg()[0],
        "resize_psnr_vs_float64_reference_640x480": psnr_db,
        "sizes": measure(args.photos, args.rounds),
    })


if __name__ == "__main__":
    main()

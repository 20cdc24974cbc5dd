"""`aligndata demo`: a noisy synthetic web, curated, trained on and evaluated, in one command.

1. build a synthetic web (aligndata.demo.web): clean scene/caption pairs plus labelled noise, and a held-out
   clean evaluation set;
2. index the evaluation images (perceptual hashes) so curate can drop their near-duplicates;
3. serve the web on 127.0.0.1 and curate it with every ALIGN rule;
4. score the filters against the hidden ground truth (precision and recall of "rejected" vs "noise");
5. train the tiny dual encoder on the curated shards and evaluate zero-shot retrieval and classification on the
   held-out set (with --compare, also on the unfiltered corpus, same budget);
6. with --loop (implies --compare), the closed loop (aligndata.demo.loop): the curated run's model scores both
   corpora, each is cut to its top fraction by score, and two more runs train on the cuts with the same budget;
   with --unicl instead (aligndata.demo.unicl), ALIGN on the curated shards against UniCL on them plus an
   image-label set, and UniCL on the image-label set alone;
7. write report.html (funnel, grid, learning curves) and demo.json.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from aligndata.demo import loop, unicl
from aligndata.demo.web import CLEAN, build_web
from aligndata.demo.world import class_names
from aligndata.filters.frequency import hash64
from aligndata.filters.text import normalize_text, tokenize, word_ngrams
from aligndata.inspect.ledger import read_ledger
from aligndata.localweb import StaticWeb
from aligndata.progress_bar import is_terminal
from aligndata.shards.contract import REJECTED
from aligndata.shards.writer import Sample, write_shard, write_sizes

# A fixed port keeps every URL, hence every sample key and the training order, the same from run to run.
DEMO_PORT = 48_765
DEMO_MAX_TEXTS_PER_IMAGE = 100  # the demo web is ~1,000x smaller than ALIGN's; scaled like the corpus
# Drawn scenes are simpler than photos (a few shapes on a tinted gradient): unrelated ones come within 6 bits of
# each other about once in 9,000 pairs, never within 4 in 45,000, while 99% of the demo's near-duplicate copies
# stay within 4 (measured). So the demo uses T = 4 instead of the photo default of 6.
DEMO_EVAL_HAMMING = 4


@dataclass
class DemoConfig:
    output: str = "demo_output"
    pairs: int = 2000
    eval_size: int = 200
    train_steps: int = 2000
    batch_size: int = 32
    compare: bool = False
    loop: bool = False  # implies compare
    keep_fraction: str | None = None  # --loop's top fraction, as typed; None: the share the rules kept
    unicl: bool = False  # the three UniCL runs instead of the curated/unfiltered ones
    label_images: int = 1200  # --unicl's image-label set: scenes drawn as files, one folder per class
    seed: int = 0
    overwrite: bool = False
    quiet: bool = False


class DemoError(Exception):
    pass


def _say(cfg: DemoConfig, message: str) -> None:
    if not cfg.quiet:
        print(message, file=sys.stderr, flush=True)


def demo_vocab_size(captions: list[str]) -> int:
    """K for the allowlist: every n-gram seen at least twice in the raw corpus fits, singletons do not.

    ALIGN's K = 100M against 1.8B raw pairs excluded the long tail of one-off tokens; this keeps that regime on a
    corpus of a few thousand captions.
    """
    counts = Counter(hash64(g) for text in captions for g in word_ngrams(tokenize(normalize_text(text))))
    return sum(1 for n in counts.values() if n >= 2)


def write_eval_shards(items: list[dict], shards: Path) -> str:
    """Held-out images with their captions and class labels, as one shard for evaluation."""
    names = class_names()
    samples = []
    for item in items:
        key = item["id"].replace("-", "_")
        samples.append(Sample(key=key, image=item["image"], image_ext="jpg", text=item["caption"],
                              meta={"key": key, "caption": item["caption"], "label": item["scene"].label},
                              cls=names.index(item["scene"].label)))
    shards.mkdir(parents=True)
    stats = write_shard(str(shards), 0, samples)
    write_sizes(str(shards), {f"{stats['shard']}.tar": stats["successes"]})
    return str(shards)


def write_eval_set(web, directory: Path) -> tuple[str, str, str, str]:
    """Held-out images as files (for the eval index) and as labelled shards (for evaluation): all of them, and
    those with no near-duplicate in the web (a leak-free comparison of curated and unfiltered training)."""
    images = directory / "images"
    images.mkdir(parents=True)
    for item in web.eval_set:
        (images / f"{item['id']}.jpg").write_bytes(item["image"])
    leaked = {row["eval_id"] for row in web.rows if row.get("eval_id")}
    shards = write_eval_shards(web.eval_set, directory / "shards")
    unleaked = write_eval_shards([i for i in web.eval_set if i["id"] not in leaked], directory / "shards-unleaked")
    classnames = directory / "classnames.txt"
    classnames.write_text("\n".join(class_names()) + "\n")
    return str(images), shards, unleaked, str(classnames)


def filter_scores(pairs_path: str, curated: str) -> dict:
    """Precision/recall of the filters: a rejected row is a positive; noise rows are the truth."""
    kinds = pq.read_table(pairs_path, columns=["kind"]).column("kind").to_pylist()
    rejected = read_ledger(curated, REJECTED, columns=["source_row", "reason"]).to_pylist()
    rejected_rows = {r["source_row"]: r["reason"] for r in rejected}
    noise = {i for i, kind in enumerate(kinds) if kind != CLEAN}
    caught = noise & set(rejected_rows)
    per_kind = {}
    for kind in sorted(set(kinds)):
        rows = [i for i, k in enumerate(kinds) if k == kind]
        reasons = Counter(rejected_rows.get(i, "kept") for i in rows)
        per_kind[kind] = {"rows": len(rows), "rejected": sum(n for r, n in reasons.items() if r != "kept"),
                          "outcomes": dict(reasons.most_common())}
    precision = len(caught) / len(rejected_rows) if rejected_rows else 1.0
    recall = len(caught) / len(noise) if noise else 1.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "noise_rows": len(noise),
            "rejected_rows": len(rejected_rows), "clean_rows_rejected": len(set(rejected_rows) - noise),
            "per_kind": per_kind}


def _train_and_evaluate(cfg: DemoConfig, data: str | list[str], run: Path, eval_shards: str, classnames: str,
                        loss: str = "align", data_weights: list[float] | None = None) -> dict:
    from aligndata.models.train import TrainConfig, train

    summary = train(TrainConfig(
        data=data, data_weights=data_weights, loss=loss, output=str(run), val_data=eval_shards, preset="tiny", vocab_size=2000, steps=cfg.train_steps,
        batch_size=cfg.batch_size, lr=2e-3, warmup_steps=max(1, cfg.train_steps // 10), optimizer="adamw",
        temperature_init=0.1,
        weight_decay=1e-4, workers=0, save_every=cfg.train_steps, seed=cfg.seed, device="cpu",
        classnames=classnames, log_every=max(1, cfg.train_steps // 50), progress=not cfg.quiet,
        shuffle_buffer=500, cache_images=True,  # ~50 epochs over ~1,200 images: decode each once
    ))
    return summary


def _evaluate_unleaked(final: str, shards: str) -> dict:
    """The model on the held-out images that have no near-duplicate anywhere in the web."""
    from aligndata.models.evaluate import evaluate_model, load_trained

    model, tokenizer, settings = load_trained(final)
    metrics = evaluate_model(model, tokenizer, shards, settings["image_size"], settings["resize_size"],
                             classnames=class_names(), max_tokens=settings["max_tokens"])
    retrieval = metrics.get("retrieval", {})
    return {"images": retrieval.get("images"), "image_to_text_R@1": retrieval.get("image_to_text_R@1"),
            "text_to_image_R@1": retrieval.get("text_to_image_R@1"),
            "zeroshot_top1": metrics.get("zeroshot", {}).get("top1")}


def learning_curve(run: Path) -> list[tuple[int, float]]:
    path = run / "metrics.jsonl"
    points = []
    if path.exists():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if "loss" in record and "step" in record:
                points.append((record["step"], record["loss"]))
    return points


def curve_svg(curves: dict[str, list[tuple[int, float]]], width: int = 640, height: int = 260) -> str:
    """Loss against step for each run, as an inline SVG (no external resources)."""
    points = [p for curve in curves.values() for p in curve]
    if not points:
        return "<p>No training metrics.</p>"
    max_step = max(s for s, _ in points) or 1
    max_loss = max(v for _, v in points) or 1.0
    pad = 40
    colours = ["#2b7bba", "#d95f02", "#1b9e77", "#7570b3"]
    lines = []
    for (name, curve), colour in zip(curves.items(), colours):
        coords = " ".join(
            f"{pad + (width - 2 * pad) * s / max_step:.1f},{height - pad - (height - 2 * pad) * v / max_loss:.1f}"
            for s, v in curve
        )
        lines.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>')
        y = 18 + 16 * len(lines)
        lines.append(f'<text x="{width - 200}" y="{y}" fill="{colour}" font-size="12">{name}</text>')
    axes = (f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#555"/>'
            f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#555"/>'
            f'<text x="{width / 2}" y="{height - 8}" font-size="12" text-anchor="middle">step (max {max_step})</text>'
            f'<text x="8" y="{pad - 8}" font-size="12">loss (max {max_loss:.2f})</text>')
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">{axes}{"".join(lines)}</svg>'


def _results_section(result: dict, curves: dict) -> str:
    import html

    rows = []
    for name, run in result["runs"].items():
        r = run["retrieval"]
        rows.append(f"<tr><td>{html.escape(run_label(name))}</td><td>{run['train_samples']}</td>"
                    f"<td>{r['image_to_text_R@1']:.1f}</td><td>{r['text_to_image_R@1']:.1f}</td>"
                    f"<td>{run['zeroshot_top1']:.1f}</td></tr>")
    f = result["filters"]
    return (
        '<section><h2>Demo: did curation matter?</h2>'
        f"<p>Filters against the hidden ground truth: precision {f['precision']:.3f}, recall {f['recall']:.3f} "
        f"({f['noise_rows']} noise rows, {f['rejected_rows']} rejected).</p>"
        "<table><tr><th>training data</th><th>samples</th><th>image→text R@1 %</th><th>text→image R@1 %</th>"
        "<th>zero-shot top-1 %</th></tr>" + "".join(rows) + "</table>"
        f"<p>Chance: R@1 {result['chance']['retrieval_R@1']:.1f}%, zero-shot {result['chance']['zeroshot']:.1f}%.</p>"
        + (_loop_paragraph(result, html.escape) if "loop" in result else "") +
        f"<h3>Learning curves</h3>{curve_svg(curves)}</section>"
    )


def _loop_paragraph(result: dict, escape) -> str:
    facts = result["loop"]
    noise = ", ".join(f"{run_label(name)} {run['mix']['noise']} of {run['train_samples']}"
                      for name, run in result["runs"].items())
    cuts = "; ".join(f"{escape(run_label(name))}: the top {cut['k']} of {cut['of']} {escape(cut['corpus'])} samples"
                     for name, cut in facts["cuts"].items())
    return (f"<p>Closed loop: the rules-only model ({escape(facts['scorer'])}) scored both corpora; kept fraction "
            f"{escape(facts['keep_fraction'])} ({facts['keep_fraction_value']:.3f}, {escape(facts['keep_fraction_why'])}); "
            f"{cuts}. Noise samples in each training set (hidden ground truth): {escape(noise)}.</p>")


def run_label(name: str) -> str:
    """How the tables name a run: the loop's or --unicl's wording (rules only, ...), else its own name."""
    if name in unicl.UNICL_RUNS:
        return unicl.UNICL_RUNS[name][0]
    return loop.LOOP_RUNS[name][0] if name in loop.LOOP_RUNS else name


def write_demo_report(curated: str, result: dict, curves: dict) -> str:
    from aligndata.inspect.report_page import render_report_html

    page = render_report_html(curated)
    section = _results_section(result, curves)
    page = page.replace("</body>", section + "</body>", 1) if "</body>" in page else page + section
    path = os.path.join(curated, "report.html")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, path)
    return path


def _run_summary(summary: dict, data: str) -> dict:
    val = summary.get("val", {})
    retrieval = val.get("retrieval", {})
    zeroshot = val.get("zeroshot", {})
    return {
        "data": data,
        "train_samples": loop.shard_samples(data),
        "mix": loop.training_mix(data),  # clean and noise samples, by the hidden ground truth
        "final_loss": summary.get("loss"),
        "retrieval": {k: v for k, v in retrieval.items() if isinstance(v, (int, float))},
        "zeroshot_top1": zeroshot.get("top1", 0.0),
        "model": summary.get("final"),
    }


def run_demo(cfg: DemoConfig, beam_args: list[str] | None = None) -> dict:
    from aligndata.pipeline.config import CurateConfig
    from aligndata.images.eval_index import build_index
    from aligndata.pipeline.run import run_curate

    if cfg.unicl and (cfg.loop or cfg.compare):
        raise DemoError("--unicl runs its own three trainings; leave out --compare and --loop")
    if cfg.unicl and cfg.label_images < cfg.batch_size:
        raise DemoError(f"--label-images {cfg.label_images} is fewer than one batch of {cfg.batch_size}")
    if cfg.loop:
        cfg.compare = True  # the loop compares against the unfiltered run
    steps = 6 if cfg.loop or cfg.unicl else 5
    out = Path(cfg.output)
    if out.exists() and any(out.iterdir()):
        if not cfg.overwrite:
            raise DemoError(f"{out} is not empty; pass --overwrite to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    progress = "off" if cfg.quiet else "text"
    if cfg.quiet or not is_terminal(sys.stderr):  # transformers' own bars ("Loading weights"): none in a log file
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

    _say(cfg, f"[1/{steps}] building a synthetic noisy web: {cfg.pairs} pairs + {cfg.eval_size} held-out images")
    web = build_web(cfg.pairs, cfg.eval_size, cfg.seed)
    eval_images, eval_shards, unleaked_shards, classnames = write_eval_set(web, out / "eval")
    index_path = str(out / "eval" / "index.npz")
    build_index([eval_images], index_path, workers=1)

    result: dict = {"config": vars(cfg), "runs": {}}
    with StaticWeb(DEMO_PORT) as server:
        for path, (body, content_type) in web.files.items():
            server.add(path, body, content_type)
        pairs_path = str(out / "pairs.parquet")
        pq.write_table(pa.table({
            "url": [server.base + row["path"] for row in web.rows],
            "caption": [row["caption"] for row in web.rows],
            "kind": [row["kind"] for row in web.rows],
        }), pairs_path)
        vocab = demo_vocab_size([row["caption"] for row in web.rows])
        common = dict(inputs=(pairs_path,), extra_cols=("kind",), allow_private_networks=True, retries=0,
                      timeout=5.0, samples_per_shard=500)
        _say(cfg, f"[2/{steps}] curating on 127.0.0.1 with every ALIGN rule (allowlist K = {vocab})")
        curated = str(out / "curated")
        run_curate(CurateConfig(output=curated, vocab_size=vocab, max_texts_per_image=DEMO_MAX_TEXTS_PER_IMAGE,
                                eval_index=index_path, eval_hamming=DEMO_EVAL_HAMMING, **common),
                   beam_args, progress)
        if cfg.compare:
            _say(cfg, f"[2/{steps}] ... and once more with the filters off (the unfiltered baseline)")
            unfiltered = str(out / "unfiltered")
            run_curate(CurateConfig(output=unfiltered, min_words=0, max_words=10**6, vocab_size=10**12,
                                    max_images_per_text=0, max_texts_per_image=0, min_side=0,
                                    max_aspect_ratio=1e9, boilerplate=False, nsfw="off", **common),
                       beam_args, progress)

    result["filters"] = filter_scores(pairs_path, curated)
    f = result["filters"]
    _say(cfg, f"[3/{steps}] filters vs ground truth: precision {f['precision']:.3f}, recall {f['recall']:.3f}")

    curves: dict = {}
    if cfg.unicl:
        _unicl_runs(cfg, out, curated, eval_shards, unleaked_shards, classnames, result, curves, steps)
        return _finish(cfg, out, web, curated, result, curves, started, steps)
    _say(cfg, f"[4/{steps}] training the tiny dual encoder for {cfg.train_steps} steps on the curated shards")

    def train_on(name: str, data: str) -> None:
        run_dir = out / f"run-{name}"
        began = time.monotonic()
        summary = _train_and_evaluate(cfg, data, run_dir, eval_shards, classnames)
        result["runs"][name] = _run_summary(summary, data)
        result["runs"][name]["unleaked"] = _evaluate_unleaked(summary["final"], unleaked_shards)
        result["runs"][name]["seconds"] = round(time.monotonic() - began, 1)  # training and both evaluations
        curves[name] = learning_curve(run_dir)

    for name, data in [("curated", curated)] + ([("unfiltered", unfiltered)] if cfg.compare else []):
        train_on(name, data)
    if cfg.loop:
        result["loop"] = _closed_loop(cfg, out, curated, unfiltered, result["runs"]["curated"]["model"], steps)
        for name, cut in result["loop"]["cuts"].items():
            _say(cfg, f"[5/{steps}] training for {cfg.train_steps} steps on {run_label(name)} ({cut['kept']} samples)")
            train_on(name, cut["subset"])
        result["runs"] = {name: result["runs"][name] for name in loop.LOOP_RUNS}  # the table's order
        curves = {run_label(name): curves[name] for name in loop.LOOP_RUNS}
    return _finish(cfg, out, web, curated, result, curves, started, steps)


def _unicl_runs(cfg: DemoConfig, out: Path, curated: str, eval_shards: str, unleaked_shards: str, classnames: str,
                result: dict, curves: dict, steps: int) -> None:
    _say(cfg, f"[4/{steps}] drawing {cfg.label_images} other scenes of the world as image files, one folder per "
              "class, and turning them into shards (shards-from-labels)")
    label_set = unicl.make_label_set(out, cfg.label_images, cfg.seed)
    result["unicl"] = {"label_set": label_set, "mix_weights": unicl.MIX_WEIGHTS}
    for name, (label, loss, _) in unicl.UNICL_RUNS.items():
        sets, weights = unicl.arm_data(name, curated, label_set["shards"])
        _say(cfg, f"[5/{steps}] {label}: {loss} loss, {cfg.train_steps} steps of {cfg.batch_size}")
        run_dir = out / f"run-{name}"
        began = time.monotonic()
        summary = _train_and_evaluate(cfg, sets if len(sets) > 1 else sets[0], run_dir, eval_shards, classnames,
                                      loss=loss, data_weights=weights)
        result["runs"][name] = unicl.arm_summary(summary, sets)
        result["runs"][name]["unleaked"] = _evaluate_unleaked(summary["final"], unleaked_shards)
        result["runs"][name]["seconds"] = round(time.monotonic() - began, 1)
        curves[run_label(name)] = learning_curve(run_dir)


def _finish(cfg: DemoConfig, out: Path, web, curated: str, result: dict, curves: dict, started: float,
            steps: int) -> dict:
    n_eval = len(web.eval_set)
    result["chance"] = {"retrieval_R@1": 100.0 / n_eval, "zeroshot": 100.0 / len(class_names())}  # percent
    result["seconds"] = round(time.monotonic() - started, 1)
    _say(cfg, f"[{steps}/{steps}] writing report.html and demo.json")
    result["report"] = write_demo_report(curated, result, curves)
    with open(out / "demo.json", "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2, default=str)
    return result


def _closed_loop(cfg: DemoConfig, out: Path, curated: str, unfiltered: str, scorer: str, steps: int) -> dict:
    """Score both corpora with the rules-only model and cut each to the kept fraction (the loop's training data)."""
    from aligndata.io.inputs import InputError
    from aligndata.models.score import ScoreError

    if cfg.keep_fraction is None:
        fraction, why = loop.rules_share(curated, unfiltered), "the share of the unfiltered corpus the rules kept"
    else:
        fraction, why = cfg.keep_fraction, "--keep-fraction"
    facts: dict = {"scorer": scorer, "keep_fraction": fraction, "keep_fraction_value": loop.fraction_value(fraction),
                   "keep_fraction_why": why, "cuts": {}}
    _say(cfg, f"[5/{steps}] the closed loop: scoring both corpora with {scorer}, keeping the top {fraction} of each")
    for name, (_, corpus, _) in loop.LOOP_RUNS.items():
        if name in ("unfiltered", "curated"):
            continue
        source = curated if corpus == "curated" else unfiltered
        try:
            cut = loop.score_and_cut(scorer, source, out / "scores" / corpus, out / f"subset-{name}", fraction,
                                     progress=not cfg.quiet)
        except (ScoreError, InputError) as err:
            raise DemoError(f"the closed loop could not cut {corpus}/: {err}") from None
        if cut["kept"] < cfg.batch_size:  # the trainer needs one whole batch
            raise DemoError(f"the top {fraction} of the {cut['of']} {corpus} samples is {cut['kept']}, fewer than "
                            f"one batch of {cfg.batch_size}: pass a larger --keep-fraction or --pairs")
        facts["cuts"][name] = {"corpus": corpus, **cut}
    return facts


def print_results(result: dict, stream=None) -> None:
    stream = stream or sys.stderr
    f = result["filters"]
    print(f"\nfilters vs ground truth: precision {f['precision']:.3f}  recall {f['recall']:.3f}", file=stream)
    for kind, stats in f["per_kind"].items():
        print(f"  {kind:22s} {stats['rejected']:5d}/{stats['rows']:<5d} rejected  {stats['outcomes']}", file=stream)
    if "unicl" in result:
        unicl.print_unicl(result, stream)
        print(f"\n{result['seconds']} s; report: {result['report']}", file=stream)
        return
    chance = result["chance"]
    print(f"\n{'training data':14s} {'samples':>8s} {'i->t R@1 %':>11s} {'t->i R@1 %':>11s} {'zero-shot %':>12s}",
          file=stream)
    for name, run in result["runs"].items():
        r = run["retrieval"]
        print(f"{run_label(name):14s} {run['train_samples']:8d} {r.get('image_to_text_R@1', 0):11.1f} "
              f"{r.get('text_to_image_R@1', 0):11.1f} {run['zeroshot_top1']:12.1f}", file=stream)
    print(f"{'chance':14s} {'':8s} {chance['retrieval_R@1']:11.1f} {chance['retrieval_R@1']:11.1f} "
          f"{chance['zeroshot']:12.1f}", file=stream)
    print("\nheld-out images with no near-duplicate in the web (no leak into the unfiltered corpus):", file=stream)
    for name, run in result["runs"].items():
        u = run["unleaked"]
        print(f"{run_label(name):14s} {u['images'] or 0:8d} {u['image_to_text_R@1'] or 0:11.1f} "
              f"{u['text_to_image_R@1'] or 0:11.1f} {u['zeroshot_top1'] or 0:12.1f}", file=stream)
    if "loop" in result:
        facts = result["loop"]
        print(f"\nclosed loop: scored by {facts['scorer']}; kept fraction {facts['keep_fraction']} "
              f"({facts['keep_fraction_value']:.3f}, {facts['keep_fraction_why']})", file=stream)
        for name, cut in facts["cuts"].items():
            lowest = cut["lowest_score_kept"]
            print(f"  {run_label(name):14s} top {cut['k']} of {cut['of']} {cut['corpus']} samples"
                  + (f", lowest score kept {lowest:.4f}" if lowest is not None else ""), file=stream)
        print("noise in each training set (hidden ground truth): "
              + ", ".join(f"{run_label(name)} {run['mix']['noise']}/{run['train_samples']}"
                          for name, run in result["runs"].items()), file=stream)
    print(f"\n{result['seconds']} s; report: {result['report']}", file=stream)

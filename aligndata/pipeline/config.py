"""The options of one curate run, as a plain picklable object shipped to every Beam worker.

Its fields are made from the option declarations, so no default is written twice: the rules' options (the
rule registry), the fetch options (fetch/options.py), the output-image options (images/process.py) and the
run options below. ``commands/curate.py`` builds the command line from the same declarations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from aligndata.extract.pages import DEFAULT_MAX_PAGE_BYTES
from aligndata.fetch.options import FETCH_OPTIONS, IMAGE_FETCH_OPTIONS
from aligndata.filters import presets, registry
from aligndata.filters.options import Option, int_within, non_negative_int, options_dataclass, positive_int
from aligndata.images.process import OUTPUT_IMAGE_OPTIONS
from aligndata.io.inputs import FORMATS
from aligndata.shards.names import DEFAULT_SHARD_DIGITS, MAX_SHARD_DIGITS


def columns(text: str) -> tuple[str, ...]:
    """"a, b" -> ("a", "b")."""
    return tuple(c.strip() for c in text.split(",") if c.strip())


INPUT_OPTIONS: tuple[Option, ...] = (
    Option("--preset", None, "a published recipe's thresholds (aligndata rules --preset NAME shows them); options "
           "given here override it", choices=tuple(presets.PRESETS), shown_default="none (ALIGN's rules)"),
    Option("--input-format", "auto", "tables, or web sources whose <img alt> pairs are extracted (see "
           "docs/extraction.md); page-urls: files listing page URLs, fetched like images",
           choices=("auto", *FORMATS)),
    Option("--page-urls", None, "html inputs: JSON mapping each file (name or path) to the URL it was fetched "
           "from", dest="page_urls_file", metavar="FILE.json"),
    Option("--max-page-bytes", DEFAULT_MAX_PAGE_BYTES, "html/warc/page-urls: skip larger pages", type=positive_int),
    Option("--skip-unreadable", False, "html/warc/page-urls: name files that cannot be read in report.json and go "
           "on (default: such a file stops the run; tables are always checked before the run)",
           action="store_true"),
    Option("--allow-empty", False, "exit 0 when the inputs hold no row at all (default: exit 2)",
           action="store_true"),
    Option("--url-col", "url", "column holding the image URL"),
    Option("--caption-col", "caption", "column holding the alt-text"),
    Option("--extra-cols", (), "input columns copied into each sample's .json", type=columns, metavar="A,B"),
    Option("--page-url-col", None, "column holding the page the image was found on"),
    Option("--no-header", False, "csv/tsv without a header row; name columns by position (--url-col 1 "
           "--caption-col 0)", action="store_true"),
    Option("--dry-run", False, "no network: apply text and frequency rules, write the candidates ledger and "
           "report.json", action="store_true"),
    Option("--overwrite", False, "replace the outputs of an earlier run in DIR", action="store_true"),
)
SHARD_OPTIONS: tuple[Option, ...] = (
    Option("--samples-per-shard", 10_000, "target mean samples per shard (exact counts in sizes.json)",
           type=positive_int),
    Option("--shard-digits", DEFAULT_SHARD_DIGITS, "digits of the zero-padded shard names: 5 is img2dataset's "
           "00000.tar, 8 DataComp's pools' 00000000.tar", type=int_within(1, MAX_SHARD_DIGITS), metavar="N"),
    Option("--parquet-failed-rows", False, "also write each shard's failed rows (status failed_to_download or "
           "failed_to_resize, with error_message) into its parquet, as img2dataset does; readers use the "
           "status == 'success' rows", action="store_true"),
    Option("--shard-times", False, "write img2dataset's start_time, end_time and duration (wall clock) into each "
           "NAME_stats.json; those files then differ from run to run (the tars and parquet files do not)",
           action="store_true"),
)
RESUME_OPTIONS: tuple[Option, ...] = (
    Option("--image-threads", None, "images decoded, checked and re-encoded at once per worker (default: its "
           "CPU count)", type=positive_int, shown_default="CPU count"),
    Option("--cache-dir", None, "where downloads are cached so an interrupted run resumes (default "
           "OUTPUT/.fetch-cache)", metavar="DIR", shown_default="OUTPUT/.fetch-cache"),
    Option("--keep-cache", False, "keep the download cache after a successful run", action="store_true"),
    Option("--allowlist-memory-mb", 1024, "largest allowlist (8 bytes an n-gram) broadcast to every worker for the "
           "rare-token rule; a larger one is joined instead (same result, slower; 0: always join)",
           type=non_negative_int),
)
# Every option a curate run has, in --help order.
CURATE_OPTIONS: tuple[Option, ...] = (INPUT_OPTIONS + registry.OPTIONS + OUTPUT_IMAGE_OPTIONS + SHARD_OPTIONS
                                      + FETCH_OPTIONS + IMAGE_FETCH_OPTIONS + RESUME_OPTIONS)


@dataclass(frozen=True)
class _CurateRun:
    inputs: tuple[str, ...]
    output: str
    progress_dir: str | None = None  # local directory for live progress files (set by the command line)
    extra: dict = field(default_factory=dict)

    # Options that do not change what a run produces: a run may resume under different values of these.
    # skip_unreadable: a finished run read every file either way; allow_empty only decides the exit status;
    # shard_times adds wall-clock fields to the stats files, which every run (a resumed one too) rewrites.
    RUN_CONTROL = ("overwrite", "progress_dir", "keep_cache", "fetch_threads", "image_threads", "max_per_host",
                   "host_rate", "skip_unreadable", "allow_empty", "allowlist_memory_mb", "shard_times")

    def to_json(self) -> dict:
        # tuples as lists, as JSON gives them back (a resumed run compares its options with config.json's)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def identity(self) -> dict:
        """The options that decide the output; a resumed run must match the interrupted one on these."""
        return {k: v for k, v in self.to_json().items() if k not in self.RUN_CONTROL}


CurateConfig = options_dataclass("CurateConfig", _CurateRun, CURATE_OPTIONS, module=__name__)
CurateConfig.__doc__ = "One curate run: inputs, output and every option in CURATE_OPTIONS (frozen, picklable)."

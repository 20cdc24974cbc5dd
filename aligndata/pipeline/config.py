"""The options of one curate run, as a plain picklable object shipped to every Beam worker."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class CurateConfig:
    inputs: tuple[str, ...]
    output: str
    input_format: str = "auto"
    url_col: str = "url"
    caption_col: str = "caption"
    extra_cols: tuple[str, ...] = ()
    page_url_col: str | None = None
    no_header: bool = False
    page_urls_file: str | None = None  # html inputs: JSON {file name or path: page URL}
    max_page_bytes: int = 10_000_000  # html/warc/page-urls: larger pages are skipped
    skip_unreadable: bool = False  # web inputs that cannot be read are named in report.json, not fatal
    allow_empty: bool = False  # a run whose inputs hold no row at all is not an error (the command exits 0)
    # ALIGN's text rules
    min_words: int = 3
    max_words: int = 20
    vocab_size: int = 100_000_000
    max_images_per_text: int = 10
    max_texts_per_image: int = 1000
    boilerplate: bool = True
    # ALIGN's image rules
    min_side: int = 200
    max_aspect_ratio: float = 3.0
    max_pixels: int = 89_478_485
    # eval-set near-duplicates and NSFW (after the image rules)
    eval_index: str | None = None
    eval_hamming: int = 6
    nsfw: str = "keywords"
    nsfw_threshold: float = 0.5
    # output images
    resize_mode: str = "keep_ratio"
    resize_filter: str = "area"
    image_size: int = 346
    encode_format: str = "jpg"
    encode_quality: int = 95
    samples_per_shard: int = 10_000
    # fetching
    timeout: float = 10.0
    total_timeout: float | None = None
    max_download_bytes: int = 20_000_000
    retries: int = 2
    allow_private_networks: bool = False
    user_agent: str | None = None
    contact: str | None = None
    fetch_threads: int = 32
    image_threads: int | None = None  # images processed at once per worker; None = the worker's CPU count
    max_per_host: int = 16
    host_rate: float | None = None  # request starts per second per host and worker; None = no limit
    respect_robots_txt: bool = False
    robots_timeout: float = 5.0
    cache_dir: str | None = None  # fetch cache for resuming; default OUTPUT/.fetch-cache
    keep_cache: bool = False  # keep the fetch cache after a successful run
    # run control
    dry_run: bool = False
    overwrite: bool = False
    progress_dir: str | None = None  # local directory for live progress files (set by the command line)
    extra: dict = field(default_factory=dict)

    # Options that do not change what a run produces: a run may resume under different values of these.
    # skip_unreadable: a finished run read every file either way; allow_empty only decides the exit status.
    RUN_CONTROL = ("overwrite", "progress_dir", "keep_cache", "fetch_threads", "image_threads", "max_per_host",
                   "host_rate", "skip_unreadable", "allow_empty")

    def to_json(self) -> dict:
        out = asdict(self)
        out["inputs"] = list(self.inputs)
        out["extra_cols"] = list(self.extra_cols)
        return out

    def identity(self) -> dict:
        """The options that decide the output; a resumed run must match the interrupted one on these."""
        return {k: v for k, v in self.to_json().items() if k not in self.RUN_CONTROL}

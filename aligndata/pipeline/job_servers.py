"""Beam's Java job servers for the portable Flink and Spark runners: fetched by coordinates from Maven Central
(`make flink`, `make spark`), found again by `curate` so `--runner FlinkRunner` needs no jar flag.

The job server must be the same Beam version as the Python SDK (`apache_beam.__version__`), and its Flink minor
must match the cluster's. Without a cached jar, Beam itself would try to download one at run time; with one,
we pass `--flink_job_server_jar` / `--spark_job_server_jar` for the user (an explicit flag always wins).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

DEFAULT_FLINK_MINOR = "1.19"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"
_ARTIFACTS = {
    "flink": "org.apache.beam:beam-runners-flink-{flink}-job-server:{beam}",
    "spark": "org.apache.beam:beam-runners-spark-3-job-server:{beam}",
}
_JAR_FLAGS = {"FlinkRunner": ("flink", "--flink_job_server_jar"), "SparkRunner": ("spark", "--spark_job_server_jar")}


def cache_dir() -> Path:
    """$ALIGNDATA_JOB_SERVERS, else the checkout's .cache/job-servers (git ignores it), else
    ~/.cache/aligndata/job-servers."""
    if os.environ.get("ALIGNDATA_JOB_SERVERS"):
        return Path(os.environ["ALIGNDATA_JOB_SERVERS"])
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / ".git").exists():
        return checkout / ".cache" / "job-servers"
    return Path.home() / ".cache" / "aligndata" / "job-servers"


def beam_version() -> str:
    from importlib.metadata import version

    return version("apache-beam")


def coordinates(kind: str, flink_minor: str = DEFAULT_FLINK_MINOR, beam: str | None = None) -> str:
    return _ARTIFACTS[kind].format(flink=flink_minor, beam=beam or beam_version())


def jar_path(kind: str, flink_minor: str = DEFAULT_FLINK_MINOR, beam: str | None = None) -> Path:
    _, artifact, version = coordinates(kind, flink_minor, beam).split(":")
    return cache_dir() / f"{artifact}-{version}.jar"


def with_cached_job_server(beam_args: list[str], runner: str | None) -> list[str]:
    """``beam_args`` plus the cached job-server jar for ``runner`` when the user named none."""
    if runner not in _JAR_FLAGS:
        return beam_args
    kind, flag = _JAR_FLAGS[runner]
    if any(a == flag or a.startswith(flag + "=") for a in beam_args):
        return beam_args
    minor = next((a.split("=", 1)[1] for a in beam_args if a.startswith("--flink_version=")), None)
    if minor is None and "--flink_version" in beam_args[:-1]:
        minor = beam_args[beam_args.index("--flink_version") + 1]
    jar = jar_path(kind, minor or DEFAULT_FLINK_MINOR)
    return [*beam_args, flag, str(jar)] if jar.is_file() else beam_args


def fetch(kind: str, flink_minor: str = DEFAULT_FLINK_MINOR) -> Path:
    """Copy the job-server jar from Maven Central into the cache; raises RuntimeError with mvn's answer."""
    target = jar_path(kind, flink_minor)
    if target.is_file():
        return target
    if shutil.which("mvn") is None:
        raise RuntimeError("mvn is not on PATH: install Maven (and Java 17) to fetch Beam's job servers")
    target.parent.mkdir(parents=True, exist_ok=True)
    command = ["mvn", "-B", "-q", "-U", f"{DEPENDENCY_PLUGIN}:copy", f"-Dartifact={coordinates(kind, flink_minor)}:jar",
               f"-DoutputDirectory={target.parent}"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=target.parent)
    if done.returncode != 0 or not target.is_file():
        answer = next((line for line in done.stdout.splitlines() if "Could not" in line or "ERROR" in line),
                      done.stdout.strip()[-500:] or done.stderr.strip()[-500:])
        raise RuntimeError(f"Maven Central did not serve {coordinates(kind, flink_minor)}\n"
                           f"  command: {' '.join(command)}\n  answer:  {answer.strip()}")
    return target


def main(argv: list[str] | None = None) -> int:
    """``python -m aligndata.pipeline.job_servers flink|spark [FLINK_MINOR]``: fetch, print the jar's path."""
    args = argv if argv is not None else sys.argv[1:]
    if not args or args[0] not in _ARTIFACTS:
        print("usage: python -m aligndata.pipeline.job_servers flink|spark [FLINK_MINOR]", file=sys.stderr)
        return 2
    try:
        print(fetch(args[0], *(args[1:2] or [DEFAULT_FLINK_MINOR])))
    except RuntimeError as err:
        print(f"aligndata: ERROR: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

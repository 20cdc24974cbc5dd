"""The fetch options, declared once: `curate` (images and pages) and `extract` (pages) both offer exactly these.

``FetchConfig.from_options`` (client.py) turns any object carrying these fields into the client's settings.
"""

from __future__ import annotations

from aligndata.filters.options import Option, defaults, non_negative_int, positive_float, positive_int

DEFAULT_TIMEOUT = 10.0
DEFAULT_RETRIES = 2
DEFAULT_ROBOTS_TIMEOUT = 5.0
DEFAULT_MAX_PER_HOST = 16
DEFAULT_FETCH_THREADS = 32
DEFAULT_MAX_DOWNLOAD_BYTES = 20_000_000

FETCH_OPTIONS: tuple[Option, ...] = (
    Option("--timeout", DEFAULT_TIMEOUT, "connect and read timeout, seconds", type=positive_float),
    Option("--total-timeout", None, "wall-clock cap per download attempt, seconds (default 2*timeout+5)",
           type=positive_float, shown_default="2 x timeout + 5"),
    Option("--retries", DEFAULT_RETRIES, "retries on connection errors, timeouts, 429 and 5xx",
           type=non_negative_int),
    Option("--fetch-threads", DEFAULT_FETCH_THREADS, "concurrent downloads per worker", type=positive_int),
    Option("--max-per-host", DEFAULT_MAX_PER_HOST, "concurrent requests to one host, per worker",
           type=positive_int),
    Option("--host-rate", None, "at most this many request starts per second to one host, per worker "
           "(default: no limit)", type=positive_float, metavar="REQ_PER_S", shown_default="no limit"),
    Option("--respect-robots-txt", False, "fetch each host's robots.txt once and skip what it disallows for "
           "'aligndata'", action="store_true"),
    Option("--robots-timeout", DEFAULT_ROBOTS_TIMEOUT, "robots.txt fetch timeout, seconds", type=positive_float),
    Option("--allow-private-networks", False, "allow private, loopback and link-local addresses (local test "
           "servers)", action="store_true"),
    Option("--user-agent", None, "full User-Agent header (default names aligndata)",
           shown_default="aligndata/VERSION"),
    Option("--contact", None, "a URL or e-mail added to the User-Agent for site owners"),
)

# Images only: pages have their own cap (--max-page-bytes).
IMAGE_FETCH_OPTIONS: tuple[Option, ...] = (
    Option("--max-download-bytes", DEFAULT_MAX_DOWNLOAD_BYTES, "streamed byte cap per image (after "
           "Content-Encoding)", type=positive_int),
)

FETCH_DEFAULTS = defaults(FETCH_OPTIONS)

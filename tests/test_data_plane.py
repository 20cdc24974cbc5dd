"""The local runner's data channel: Beam's timed flusher loses a write that lands during a slow flush; the
stream our runs use (pipeline/data_plane.py) sends every byte under the same interleaving."""

from __future__ import annotations

import threading
import time

from apache_beam.runners.portability.fn_api_runner import worker_handlers
from apache_beam.runners.worker.data_plane import ClosableOutputStream

from aligndata.pipeline.data_plane import no_timed_flush
from aligndata.pipeline.run import pipeline_options


def _write_during_a_blocked_flush(time_limit_ms: int) -> int:
    """Bytes that reach the send side through the runner's timed stream when a second write lands while the
    background flush is blocked in its callback (a full send queue)."""
    sent: list[bytes] = []
    in_callback, release = threading.Event(), threading.Event()

    def flush_callback(data: bytes) -> None:
        sent.append(bytes(data))
        if len(sent) == 1:
            in_callback.set()
            release.wait(10)  # the send queue is full for a while

    stream = ClosableOutputStream.create(lambda data: sent.append(bytes(data)), flush_callback, time_limit_ms)
    stream.write(b"a" * 1000)
    assert in_callback.wait(10), "the timed flush never started"
    stream.write(b"b" * 1000)  # lands while the flush is between reading and clearing the buffer
    release.set()
    time.sleep(0.2)
    stream.close()
    return sum(map(len, sent))


def test_beams_timed_flusher_loses_a_concurrent_write():
    # If this starts failing, Beam fixed the race: no_timed_flush can go (and this test with it).
    assert _write_during_a_blocked_flush(worker_handlers.DATA_BUFFER_TIME_LIMIT_MS or 100) == 1000


def test_pipeline_options_turn_the_timed_flusher_off():
    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 1000  # Beam's default
    pipeline_options(["--runner", "FnApiRunner"])
    assert worker_handlers.DATA_BUFFER_TIME_LIMIT_MS == 0
    no_timed_flush()  # idempotent
    assert worker_handlers.DATA_BUFFER_TIME_LIMIT_MS == 0


def test_without_the_timed_flusher_every_byte_is_sent():
    """With the limit at 0 the stream flushes only inside write (past its size threshold) and on close: a slow
    send blocks the writer itself, so no write can land between a flush's read and its clear."""
    no_timed_flush()
    sent: list[bytes] = []
    threads_before = threading.active_count()

    def slow_send(data: bytes) -> None:
        time.sleep(0.01)
        sent.append(bytes(data))

    stream = ClosableOutputStream.create(lambda data: sent.append(bytes(data)), slow_send,
                                         worker_handlers.DATA_BUFFER_TIME_LIMIT_MS)
    assert threading.active_count() == threads_before  # no background flusher was started
    chunk = b"x" * (3 << 20)
    for _ in range(8):  # 24 MB: two size-triggered flushes, the rest on close
        stream.write(chunk)
        stream.maybe_flush()
    stream.close()
    assert len(sent) >= 3
    assert sum(map(len, sent)) == 8 * len(chunk)

"""No lost bytes between the local runner and its SDK workers: the runner's data channel without a timed flusher.

Beam's FnApiRunner (multi_processing and embedded gRPC modes) sends each bundle's input to its worker through
``TimeBasedBufferingClosableOutputStream``: writes are buffered, and a background thread flushes the buffer
every ``DATA_BUFFER_TIME_LIMIT_MS`` (1 s). That flush reads the buffer, hands it to the send queue and then
clears it, and ``write`` does not take the flush's lock: when the send queue is full (100 MB, so on large
inputs with busy workers) the flusher blocks between its read and its clear, a chunk written meanwhile lands
in the buffer and is cleared unsent. Nothing reports it. Measured here (Beam 2.77): a 4.5M-row `curate
--dry-run` on multi_processing with 2 workers lost one worker's entire output of the URL-group stage on its way
to the ledger parts (one 7.2 MB chunk of verdict batches, three runs out of three); ApplyVerdicts found the
gap and stopped the run ("no verdict reached ..."). tests/test_data_plane.py shows the race on Beam's own class.

With the limit at 0 the runner builds ``SizeBasedBufferingClosableOutputStream`` instead (flush when the
buffer passes 10 MB and on close, always from the writing thread): the same bytes, no background thread, no
race. Batch runs lose nothing by it: the runner writes a bundle's whole input and closes the stream. Runners
that are not Beam's local one (Flink, Dataflow) are untouched.
"""

from __future__ import annotations

from apache_beam.runners.portability.fn_api_runner import worker_handlers


def no_timed_flush() -> None:
    """Make the local runner's data channels flush only from the writing thread (see above). Idempotent; set
    before a pipeline starts its workers (``pipeline_options`` calls it)."""
    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0

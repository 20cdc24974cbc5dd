"""multi_processing workers started when the command starts, so their imports overlap the launcher's.

Beam's local runner starts its SDK worker processes (``python -m apache_beam.runners.worker.sdk_worker_main``)
only when the first stage runs; each then spends ~2-2.5 s importing Beam and our stages while the launcher,
which has just spent ~4 s importing and building the pipeline on one core, waits. Measured on a 10-photo
curate with 2 workers: the first of 44 stages took 2.8 s, the other 43 together 3.3 s (benchmarks/RESULTS.md).

Here the command starts one process first (``started``): it imports sdk_worker_main and the command's stages
once, then forks the N workers, each of which waits on a Unix socket in a private directory. One import instead
of N: on a 2-core machine N importing workers competed with the launcher's own imports and graph building, the
critical path (2,000-photo curate, 2 workers: the workers were ready at 1.7-2.2 s of the run and the first stage
began at 1.7-2.2 s; forked, it begins at 1.3-1.6 s, and the run takes 8.4-8.9 s instead of 9.9-10.3). The
runner's worker command (the SUBPROCESS_SDK environment of the pipeline proto) becomes ``python -m
aligndata.pipeline.warm_workers handoff DIR``: a tiny program that claims one waiting worker (an atomic rename:
one claim per worker), sends it the environment Beam gave the handoff, and waits for the worker's exit status,
which it exits with. So Beam still starts, watches and stops one process per worker, and the harness is Beam's
own ``sdk_worker_main.main`` on the same environment.

The fork happens before any gRPC channel exists (Beam's import starts no gRPC thread); the threads the imports
do start (OpenBLAS's pool, pyarrow's jemalloc background thread) handle fork themselves, as they must for
``multiprocessing``'s fork start method.

A waiting worker serves only an environment equal to the one it started with, apart from the variables Beam and
the shell add (``_HANDED_OVER``): glibc and Python read some variables only at start (MALLOC_*, PYTHONPATH), so a
worker started before a change would not be the worker Beam asked for. It refuses then, and the handoff runs
Beam's own harness itself, as Beam's usual worker would; so it does when no worker is left (a second pipeline in
one command) or one died. Workers print only errors on their stderr: their log records reach the launcher.
Waiting workers die with the command (PR_SET_PDEATHSIG on Linux, the forking process with the command and each
worker with it; ``started`` also ends the unclaimed ones).

Top-level imports are the standard library only: the handoff must start in milliseconds.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Callable

BEAM_WORKER = "apache_beam.runners.worker.sdk_worker_main"
# What Beam's SubprocessSdkWorker adds to the launcher's environment, and what /bin/sh adds on its way.
_HANDED_OVER = {"CONTROL_API_SERVICE_DESCRIPTOR", "LOGGING_API_SERVICE_DESCRIPTOR", "STATUS_API_SERVICE_DESCRIPTOR",
                "PIPELINE_OPTIONS", "PIPELINE_OPTIONS_FILE", "WORKER_ID", "SEMI_PERSISTENT_DIRECTORY",
                "RUNNER_CAPABILITIES", "PWD", "OLDPWD", "SHLVL", "_"}
SWITCH = "ALIGNDATA_WARM_WORKERS"  # =0: Beam starts its workers itself, as without this module
_WAIT_FOR_READY_S = 300.0  # a worker still importing is waited for (a cold start would import all the same)
_POLL_S = 0.005


@dataclass(frozen=True)
class Warm:
    """What a command's workers preload: the modules its DoFns live in, and the environment variables its run
    sets before the runner starts workers (a callable, asked when the command starts: heap.run_environment)."""

    modules: tuple[str, ...]
    environment: Callable[[], dict[str, str]] = dict


def _curate_environment() -> dict[str, str]:
    from aligndata.pipeline.heap import run_environment  # the variables run_curate sets for its workers

    return run_environment()


CURATE = Warm(("aligndata.pipeline.curate",), _curate_environment)


@dataclass
class Pool:
    directory: str
    count: int
    forking: subprocess.Popen | None = None  # the process that imports once and forks the workers

    def worker_pids(self) -> dict[int, int]:
        """{worker index: pid} of the workers forked so far."""
        pids = {}
        for index in range(self.count):
            with contextlib.suppress(OSError, ValueError):
                with open(os.path.join(self.directory, f"{index}.pid")) as f:
                    pids[index] = int(f.read())
        return pids

    @property
    def command(self) -> str:
        return f"{shlex.quote(sys.executable)} -m aligndata.pipeline.warm_workers handoff {shlex.quote(self.directory)}"


_pool: Pool | None = None  # the pool of this command; the runner below uses it


def worker_count(beam_args: list[str]) -> int:
    """How many warm workers these Beam arguments call for: --direct_num_workers under --direct_running_mode
    multi_processing on the local runner (FnApiRunner, the default), else 0. Parsed here without importing Beam
    (a second of the launcher's time the workers would wait for); runner_for checks Beam's own parse."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--runner", default=None)
    parser.add_argument("--direct_running_mode", default="in_memory")
    parser.add_argument("--direct_num_workers", type=int, default=1)
    try:
        known, _ = parser.parse_known_args(beam_args)
    except SystemExit:  # a malformed value: Beam's parser reports it properly later
        return 0
    return _count(known.runner, known.direct_running_mode, known.direct_num_workers)


def _count(runner: str | None, running_mode: str | None, num_workers: int | None) -> int:
    if (runner or "FnApiRunner").split(".")[-1] != "FnApiRunner" or running_mode != "multi_processing":
        return 0
    return num_workers or os.cpu_count() or 1


@contextlib.contextmanager
def started(beam_args: list[str], warm: Warm | None):
    """For the command's duration: its multi_processing workers, started now (none when the arguments ask for
    another runner or mode, or ``warm`` is None). Yields the pool or None."""
    global _pool
    wanted = warm is not None and _pool is None and os.environ.get(SWITCH, "1") != "0"
    count = worker_count(beam_args) if wanted and hasattr(os, "fork") else 0  # no fork (Windows): Beam's workers
    if not count:
        yield None
        return
    from aligndata.io.atomic import write_bytes_atomic  # not at the top: the handoff imports this module too

    pool = Pool(tempfile.mkdtemp(prefix="aligndata-warm-"), count)
    env = {**os.environ, **warm.environment()}
    try:
        pool.forking = subprocess.Popen(
            [sys.executable, "-m", "aligndata.pipeline.warm_workers", "serve", str(os.getpid()), pool.directory,
             str(count), *warm.modules], env=env, stdin=subprocess.DEVNULL)
        for index in range(count):  # claimable at once: a handoff waits for the worker to be ready
            write_bytes_atomic(os.path.join(pool.directory, f"{index}.free"), str(pool.forking.pid).encode())
        _pool = pool
        yield pool
    finally:
        _pool = None
        if pool.forking is not None:
            # served workers have exited with their harness; the unclaimed go now (the kernel would kill them
            # with the forking process on Linux; elsewhere nothing would)
            for index, pid in pool.worker_pids().items():
                if os.path.exists(os.path.join(pool.directory, f"{index}.free")):
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
            if pool.forking.poll() is None:
                pool.forking.kill()
            pool.forking.wait()
        shutil.rmtree(pool.directory, ignore_errors=True)


def runner_for(options):
    """The runner for ``beam.Pipeline(runner=..., options=options)``: Beam's FnApiRunner using this command's
    warm workers when a pool was started for these options, else None (Beam then picks the runner by name)."""
    if _pool is None:
        return None
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    direct = options.view_as(DirectOptions)
    if not _count(options.view_as(StandardOptions).runner, direct.direct_running_mode, direct.direct_num_workers):
        return None
    return _warm_runner_class()(_pool.command)


def _warm_runner_class():
    from apache_beam.portability import python_urns
    from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

    class WarmFnApiRunner(FnApiRunner):
        """FnApiRunner whose multi_processing workers are started through the handoff (see the module)."""

        def __init__(self, command: str):
            super().__init__()
            self._warm_command = command

        def run_via_runner_api(self, pipeline_proto, options):
            for environment in pipeline_proto.components.environments.values():
                # the payload is the command line itself; only the runner's own command is replaced
                if environment.urn == python_urns.SUBPROCESS_SDK and \
                        environment.payload.decode().endswith(f"-m {BEAM_WORKER}"):
                    environment.payload = self._warm_command.encode()
            return super().run_via_runner_api(pipeline_proto, options)

    return WarmFnApiRunner


# ---------------------------------------------------------------------------------------------------------
# The two programs: the process that forks the waiting workers (serve) and the runner's worker command (handoff).


def serve(parent: int, directory: str, count: int, modules: list[str]) -> int:
    """Import once, then fork ``count`` waiting workers; wait for them all. Exits 1 when the imports failed or
    a worker did not end well, else 0."""
    _die_with_parent(parent)
    _worker_logging()
    start_env = dict(os.environ)
    # Python's recipe for fork without exec (the gc module's docs): no collection while importing (everything
    # imported lives as long as the workers), the heap frozen before forking, collection again in each worker.
    # The workers' collections then never walk (and so never write to, unsharing the page) the ~0.5M objects
    # of the imports, and the teardown of this process does not either (it waits for its workers, then ends).
    gc.disable()
    try:
        import importlib

        from aligndata.io.atomic import write_bytes_atomic
        from aligndata.pipeline import beam_caches

        beam_caches.install()  # each bundle processor asks again (beam_caches.py)
        for module in (BEAM_WORKER, *modules):  # once, for every worker
            importlib.import_module(module)
    except Exception:  # quietly: the handoff sees this process gone and starts Beam's, which reports real errors
        return 1
    gc.freeze()
    me, children = os.getpid(), {}
    for index in range(count):
        try:
            with warnings.catch_warnings():  # Python 3.12+ warns about forking with threads (see the module)
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
        except OSError:  # out of processes: the forked ones die with this one, the handoffs start Beam's
            return 1
        if pid == 0:
            gc.enable()
            code = 1
            try:
                code = _worker(me, directory, str(index), start_env)
            finally:
                os._exit(code)  # as a cold worker ends when its harness returns; its threads are the harness's
        children[pid] = index
        write_bytes_atomic(os.path.join(directory, f"{index}.pid"), str(pid).encode())
    failed = False
    while children:
        pid, status = os.wait()
        if children.pop(pid, None) is not None:
            failed |= os.waitstatus_to_exitcode(status) != 0
    return 1 if failed else 0


def _worker(parent: int, directory: str, index: str, start_env: dict[str, str]) -> int:
    """A waiting worker: serve one handoff whose environment matches ``start_env``, as Beam's worker."""
    _die_with_parent(parent)
    from apache_beam.runners.worker import sdk_worker_main

    from aligndata.io.atomic import write_bytes_atomic

    try:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(os.path.join(directory, f"{index}.sock"))  # a path too long for a socket fails here
        listener.listen(1)
    except OSError:
        return 1
    write_bytes_atomic(os.path.join(directory, f"{index}.ready"), str(os.getpid()).encode())
    connection, _ = listener.accept()
    listener.close()
    stream = connection.makefile("rwb")
    env = json.loads(stream.readline())
    differs = sorted(k for k in set(env) | set(start_env)
                     if k not in _HANDED_OVER and env.get(k) != start_env.get(k))
    if differs:
        stream.write(f"refused {','.join(differs)}\n".encode())
        stream.flush()
        return 0
    stream.write(b"ok\n")
    stream.flush()
    for key in _HANDED_OVER:
        if key in env:
            os.environ[key] = env[key]
        else:
            os.environ.pop(key, None)
    code = 0
    try:
        sdk_worker_main.main([BEAM_WORKER])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        logging.exception("the SDK harness failed")
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    with contextlib.suppress(OSError):
        stream.write(f"exit {code}\n".encode())
        stream.flush()
    return code


def handoff(directory: str) -> int:
    """The runner's worker command: run this worker in a waiting process, or start Beam's usual one."""
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        if not name.endswith(".free"):
            continue
        index = name[:-len(".free")]
        claimed = os.path.join(directory, f"{index}.claimed-{os.getpid()}")
        try:
            os.rename(os.path.join(directory, name), claimed)  # atomic: one handoff per worker
        except OSError:
            continue
        with open(claimed) as f:
            forking = int(f.read())
        code = _hand_to(directory, index, forking)
        if code is not None:
            return code
    # no warm worker: Beam's own harness in this process, as `python -m BEAM_WORKER` would start it
    _worker_logging()
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main([BEAM_WORKER])
    return 0


def _hand_to(directory: str, index: str, forking: int) -> int | None:
    """Give the worker our environment; its exit status, or None when it refused or died before serving."""
    ready = os.path.join(directory, f"{index}.ready")
    deadline = time.monotonic() + _WAIT_FOR_READY_S
    while not os.path.exists(ready):
        # the worker once forked (its pid file), the forking process until then (still importing)
        if not _alive(_read_pid(os.path.join(directory, f"{index}.pid")) or forking) or time.monotonic() > deadline:
            return None
        time.sleep(_POLL_S)
    pid = _read_pid(ready)
    if pid is None:
        return None
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(os.path.join(directory, f"{index}.sock"))
    except OSError:
        return None
    stream = connection.makefile("rwb")
    stream.write(json.dumps(dict(os.environ)).encode() + b"\n")
    stream.flush()
    answer = stream.readline().decode()
    if answer != "ok\n":
        if answer.startswith("refused"):
            print(f"aligndata: a warm worker refused ({answer.split()[-1]} changed since it started); "
                  "starting Beam's worker instead", file=sys.stderr)
        return None
    signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGTERM))  # Beam stopping us stops the worker
    final = stream.readline().decode().split()
    return int(final[1]) if len(final) == 2 and final[0] == "exit" else 1


def _worker_logging() -> None:
    """Before Beam's import: a worker's own stderr shows errors only. Beam sends a worker's log records to the
    launcher, where the command's verbosity applies; without a handler of ours, Beam's import-time warning about
    Google's client libraries makes logging add a stderr handler, which then prints every INFO line of the
    harness (~20 lines a worker, under --quiet too)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.ERROR)
    from aligndata import LOG_FORMAT  # the package is imported already (this module is inside it)

    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(handler)


def _read_pid(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet waited for by the launcher) counts as dead.
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this process when the one that started it (``parent``) dies."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the line above: nobody will ever claim this worker
        os._exit(0)


def main(argv: list[str]) -> int:
    if len(argv) >= 4 and argv[0] == "serve":
        return serve(int(argv[1]), argv[2], int(argv[3]), argv[4:])
    if len(argv) == 2 and argv[0] == "handoff":
        return handoff(argv[1])
    print("usage: python -m aligndata.pipeline.warm_workers serve PARENT_PID DIR COUNT [MODULE...] | handoff DIR",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Local worker processes forked from the launcher, so they start with its imports done.

With `--direct_running_mode=multi_processing`, the DirectRunner starts each worker as a new
interpreter (`python -m apache_beam.runners.worker.sdk_worker_main`) that imports Beam, the
job and its libraries again before it can work: about 1.5 s per worker for the QuickDraw
job and 4 s with TensorFlow (TFDV, TFT), on jobs that take 10-20 s. Here the same number of
workers is forked from the launcher once the pipeline is built, as it starts to run (forked
earlier, every page the building writes to would be copied first), and each runs the
harness Beam's worker runs (`sdk_worker_main.create_harness`), joined to the runner as a
Beam "external" worker over the Fn API: the same runner, protocol and process boundaries,
without the second start-up. A job may name the transforms that do its work (`bulk`); the
other, small stages then run in the launcher, as on one worker, without the gRPC round trips.

Forking is only safe when the child will not need a thread it does not get (only the
forking thread survives a fork): the launcher must have no other Python thread, must not
have started gRPC, and must have no native thread beyond those it had when this module was
imported (numpy's and pyarrow's, whose libraries handle a fork; TensorFlow's runtime pools,
once started, do not). A launcher that already ran TensorFlow or a multi-process pipeline, as in
a test session, fails that check; the job then logs why and uses Beam's own worker
processes. Any other runner or mode is left as it is.
"""

import contextlib
import gc
import itertools
import json
import logging
import os
import signal
import threading
import time
import traceback
from typing import Iterator, List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.metrics import monitoring_infos
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.portability import common_urns, python_urns
from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc, beam_runner_api_pb2, endpoints_pb2
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.direct import direct_runner
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.portability.portable_runner import JobServiceHandle
from apache_beam.transforms import environments
from apache_beam.utils import thread_pool_executor
from google.protobuf import json_format, text_format

from beam_jobs import beam_overheads

_LOGGER = logging.getLogger(__name__)
_DIRECT_RUNNERS = (None, "DirectRunner", "direct", "SwitchingDirectRunner")
_GRPC_THREADS = ("grpc_global_tim", "default-executo", "resolver-execut")  # gRPC core's, by /proc comm
_STOP_SECONDS = 10
_HERE = "launcher_embedded"  # the environment of the stages that run in the launcher


def _thread_names() -> Optional[List[str]]:
    """The process's native threads, by name (None where /proc cannot tell)."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    names = []
    for task in tasks:
        try:
            names.append(_read(f"/proc/self/task/{task}/comm"))
        except OSError:  # the thread ended after the listing (gRPC's pool threads, say)
            continue
    return names


def _read(path: str) -> str:
    with open(path) as handle:
        return handle.read().strip()


# At import, before the job runs: the main thread and the pools that numpy (OpenBLAS) and
# pyarrow (jemalloc) start when imported, whose libraries handle a fork.
_THREADS_AT_IMPORT = len(_thread_names() or [])


def fork_unsafe_reason() -> Optional[str]:
    """Why this process cannot fork workers now, or None when it can."""
    names = _thread_names() if hasattr(os, "fork") else None
    if names is None:
        return "this platform cannot tell whether forking is safe (no fork() or no /proc)"
    if any(name in _GRPC_THREADS for name in names):
        return "gRPC was started in this process before (an earlier multi-process pipeline?)"
    if threading.active_count() > 1:
        return f"{threading.active_count() - 1} other Python thread(s) are running"
    if len(names) > _THREADS_AT_IMPORT:
        return (f"{len(names) - _THREADS_AT_IMPORT} native thread(s) started since start-up (TensorFlow's or "
                "Arrow's thread pools, say) would be missing in a forked worker")
    return None


def is_local_runner(runner) -> bool:
    """Whether a pipeline's runner is Beam's local DirectRunner (either kind) or its FnApiRunner."""
    return isinstance(runner, (direct_runner.SwitchingDirectRunner, direct_runner.BundleBasedDirectRunner,
                               fn_runner.FnApiRunner))


def _worker_count(pipeline_options: PipelineOptions) -> int:
    """Workers to fork for these options: 0 unless the DirectRunner runs multi_processing
    (0 workers there means one per CPU, as in Beam)."""
    direct = pipeline_options.view_as(DirectOptions)
    runner = pipeline_options.view_as(StandardOptions).runner
    if runner not in _DIRECT_RUNNERS or direct.direct_running_mode != "multi_processing":
        return 0
    return direct.direct_num_workers or os.cpu_count() or 1


def _not_the_runners_flags(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Discarding unparseable args")


def _run_child(read_fd: int) -> None:
    """A forked worker: waits for its start request from the pool, runs Beam's harness, exits."""
    status = 1
    try:
        with os.fdopen(read_fd, "rb") as pipe:
            request = pipe.read()
        if not request:  # the pool closed without starting this worker
            status = 0
            return
        from apache_beam.runners.worker import sdk_worker_main

        # The options the runner hands a worker hold DirectRunner flags that the worker's
        # parser reports as "Discarding unparseable args": Beam's doing, not the user's flags
        # (the launcher's own report of a mistyped flag still shows).
        logging.getLogger("apache_beam.options.pipeline_options").addFilter(_not_the_runners_flags)
        _, harness, _ = sdk_worker_main.create_harness(json.loads(request))
        harness.run()
        status = 0
    except BaseException:  # noqa: B036 - a child must report and exit, never return into the launcher
        traceback.print_exc()
    finally:
        os._exit(status)


class ForkedWorkerPool(beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolServicer):
    """`count` idle forked workers behind Beam's external worker pool service.

    The runner asks it for each worker (StartWorker); the request's control endpoint goes
    to an idle child through its pipe, with the pipeline options Beam gives its subprocess
    workers, and the child connects to the runner like any Beam worker.
    """

    def __init__(self, count: int, options_json: str):
        self._options_json = options_json
        self._idle: List[Tuple[int, int]] = []  # (pid, write end of its pipe)
        self._pids: List[int] = []
        self._lock = threading.Lock()
        for _ in range(count):
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:
                try:
                    os.close(write_fd)
                    for _, other in self._idle:  # so that closing a pipe in the launcher reaches its child
                        os.close(other)
                    _run_child(read_fd)
                finally:
                    os._exit(1)  # a child never returns into the launcher's code
            os.close(read_fd)
            self._idle.append((pid, write_fd))
            self._pids.append(pid)
        import grpc  # only now: gRPC must not run in the launcher before the fork

        self._server = grpc.server(thread_pool_executor.shared_unbounded_instance())
        beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(self, self._server)
        self.address = f"localhost:{self._server.add_insecure_port('localhost:0')}"
        self._server.start()

    def StartWorker(self, request, context):  # noqa: N802 - the gRPC service's method name
        with self._lock:
            if not self._idle:
                return beam_fn_api_pb2.StartWorkerResponse(error="every forked worker is already started")
            _, write_fd = self._idle.pop(0)
        environment = {
            "CONTROL_API_SERVICE_DESCRIPTOR": text_format.MessageToString(
                endpoints_pb2.ApiServiceDescriptor(url=request.control_endpoint.url)),
            "PIPELINE_OPTIONS": self._options_json,
            "WORKER_ID": request.worker_id,
        }
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(json.dumps(environment).encode())
        return beam_fn_api_pb2.StartWorkerResponse()

    def StopWorker(self, request, context):  # noqa: N802 - a worker ends when the runner closes its control stream
        return beam_fn_api_pb2.StopWorkerResponse()

    def close(self) -> None:
        """Stops the service, releases idle workers and waits for every child to end."""
        self._server.stop(0)
        with self._lock:
            idle, self._idle = self._idle, []
        for _, write_fd in idle:
            os.close(write_fd)
        deadline = time.monotonic() + _STOP_SECONDS
        for pid in self._pids:
            while not os.waitpid(pid, os.WNOHANG)[0]:
                if time.monotonic() > deadline:
                    _LOGGER.warning("forked worker %d did not stop within %d s; killing it", pid, _STOP_SECONDS)
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.02)


class _Recorded:
    """A stage's bundle context whose output buffers record what they are given, in order."""

    def __init__(self, context, recorded: list):
        self._context, self._recorded = context, recorded

    def get_buffer(self, buffer_id, transform_id):
        return _Recorder(self._recorded, (buffer_id, transform_id))

    def __getattr__(self, name):
        return getattr(self._context, name)


class _Recorder:
    def __init__(self, recorded: list, key):
        self._recorded, self._key = recorded, key

    def append(self, data: bytes) -> None:
        self._recorded.append((self._key, data))


class _PartOrderBundleManager(fn_runner.ParallelBundleManager):
    """Beam's ParallelBundleManager, except that each worker's output is kept apart and handed
    to the runner's buffers in the order of the parts once all are done, not as it arrives:
    the next stage reads the same order (TFDV merges the workers' partial statistics in it)
    whichever worker finished first. A stage with timers runs as in Beam."""

    def process_bundle(self, inputs, expected_outputs, fired_timers, expected_output_timers, dry_run=False):
        if fired_timers or expected_output_timers:
            return super().process_bundle(inputs, expected_outputs, fired_timers, expected_output_timers, dry_run)
        parts: List[dict] = [{} for _ in range(self._num_workers)]
        for name, buffer in inputs.items():
            for index, part in enumerate(buffer.partition(self._num_workers)):
                parts[index][name] = part
        recorded: List[list] = [[] for _ in parts]

        def execute(index: int):
            manager = fn_runner.BundleManager(_Recorded(self.bundle_context_manager, recorded[index]),
                                              self._progress_frequency, cache_token_generator=self._cache_token_generator)
            return manager.process_bundle(parts[index], expected_outputs, {}, {}, dry_run)

        with thread_pool_executor.shared_unbounded_instance() as executor:
            results = list(executor.map(execute, range(len(parts))))
        for (buffer_id, transform_id), data in itertools.chain.from_iterable(recorded):
            self.bundle_context_manager.get_buffer(buffer_id, transform_id).append(data)
        responses = [response for response, _ in results]
        merged = responses[0] if len(responses) == 1 else beam_fn_api_pb2.InstructionResponse(
            process_bundle=beam_fn_api_pb2.ProcessBundleResponse(monitoring_infos=monitoring_infos.consolidate(
                itertools.chain.from_iterable(response.process_bundle.monitoring_infos for response in responses))),
            error=next((response.error for response in responses if response.error), ""))
        return merged, [split for _, splits in results for split in splits]


class _ForkedWorkersRunner(fn_runner.FnApiRunner):
    """The DirectRunner's FnApiRunner, whose multi_processing workers are forked from this
    process once the pipeline is built (so that building it copies no page shared with them):
    the environment it would start as subprocesses becomes Beam's external environment,
    served by the pool. Where forking is not safe, it starts Beam's subprocess workers.

    With `bulk` (label prefixes of the transforms that do the job's work), every fused stage
    of that environment that holds none of them runs in this process instead, in Beam's
    embedded environment, as on one worker: a small stage costs two gRPC round trips and two
    set-ups on two workers (the statistics job's 21 small stages: 0.1 s of about 3 s). The
    workers' outputs are handed on in a fixed order (_PartOrderBundleManager)."""

    def __init__(self, count: int, provision_info: fn_runner.ExtendedProvisionInfo, bulk: Tuple[str, ...]):
        super().__init__(provision_info=provision_info)
        self._count, self._bulk = count, bulk
        self._pool_payload: Optional[bytes] = None  # while the pool serves a run with `bulk`

    def run_via_runner_api(self, pipeline_proto, options):
        reason = fork_unsafe_reason()
        if reason:
            _LOGGER.info("worker processes start as new interpreters: %s", reason)
            return super().run_via_runner_api(pipeline_proto, options)
        gc.freeze()  # what building the pipeline made, out of the children's collections too
        pool = ForkedWorkerPool(self._count, json_format.MessageToJson(self._provision_info.provision_info.pipeline_options))
        _LOGGER.info("%d worker process(es) forked from this one for the DirectRunner's multi_processing mode",
                     self._count)
        payload = beam_runner_api_pb2.ExternalPayload(
            endpoint=endpoints_pb2.ApiServiceDescriptor(url=pool.address)).SerializeToString()
        try:
            for environment in pipeline_proto.components.environments.values():
                if environment.urn == python_urns.SUBPROCESS_SDK:
                    environment.urn, environment.payload = common_urns.environments.EXTERNAL.urn, payload
            self._pool_payload = payload if self._bulk else None
            return super().run_via_runner_api(pipeline_proto, options)
        finally:
            self._pool_payload = None
            pool.close()

    def create_stages(self, pipeline_proto):
        context, stages = super().create_stages(pipeline_proto)
        if self._pool_payload:
            self._run_small_stages_here(context.components.environments, stages)
        return context, stages

    def _run_small_stages_here(self, environments_by_id, stages) -> None:
        pool_environments = {environment_id for environment_id, environment in environments_by_id.items()
                             if environment.urn == common_urns.environments.EXTERNAL.urn
                             and environment.payload == self._pool_payload}
        movable = [stage for stage in stages if stage.environment is None or stage.environment in pool_environments]
        small = [stage for stage in movable
                 if not any(transform.unique_name.startswith(self._bulk) for transform in stage.transforms)]
        named = " or ".join(f"{prefix}*" for prefix in self._bulk)
        if len(small) == len(movable):
            _LOGGER.warning("no stage holds a transform named %s: every stage runs on the workers", named)
            return
        environments_by_id[_HERE].CopyFrom(environments.EmbeddedPythonEnvironment.default().to_runner_api(None))
        for stage in small:
            stage.environment = _HERE
        _LOGGER.info("the workers run the %d stage(s) holding %s; the %d other (small) stage(s) run in this process",
                     len(stages) - len(small), named, len(small))

    def _get_bundle_manager(self, bundle_context_manager):
        manager = super()._get_bundle_manager(bundle_context_manager)
        if type(manager) is not fn_runner.ParallelBundleManager:
            return manager
        return _PartOrderBundleManager(bundle_context_manager, self._progress_frequency,
                                       cache_token_generator=manager._cache_token_generator)

    def _execute_bundle(self, runner_execution_context, bundle_context_manager, bundle_input):
        if bundle_context_manager.stage.environment == _HERE and bundle_context_manager.num_workers != 1:
            # One worker, as on the one-worker runner. Beam's set-up may have made one embedded
            # worker per worker already (for the stage's data endpoint): only the first is kept.
            bundle_context_manager.num_workers = 1
            bundle_context_manager._worker_handlers = bundle_context_manager.worker_handlers[:1]
        return super()._execute_bundle(runner_execution_context, bundle_context_manager, bundle_input)


@contextlib.contextmanager
def pipeline(pipeline_options: PipelineOptions, bulk: Sequence[str] = ()) -> Iterator[beam.Pipeline]:
    """`with beam.Pipeline(options=...)` for this project's batch jobs, with the DirectRunner's
    multi_processing workers forked from this process when that is safe (module docstring).
    `bulk`: label prefixes of the transforms that do the job's work; with forked workers, the
    stages without any of them run in this process (_ForkedWorkersRunner).

    The objects that exist when it starts (the imports: well over a million with TensorFlow)
    are frozen out of the garbage collector for the run (gc.freeze, as Python's documentation
    advises before a fork): each full collection would scan them all, 0.2-0.3 s, and in a
    forked worker touch, so copy, every page that holds one. A heap its caller froze is left
    as it is. Two of Beam's fixed costs are cut meanwhile (beam_overheads)."""
    if isinstance(bulk, str):
        raise TypeError("bulk: a sequence of label prefixes, not one string")
    owner = gc.get_freeze_count() == 0
    if owner:
        gc.freeze()
    try:
        with beam_overheads.reduced(), _pipeline(pipeline_options, tuple(bulk)) as built:
            yield built
    finally:
        if owner:
            gc.unfreeze()


@contextlib.contextmanager
def _pipeline(pipeline_options: PipelineOptions, bulk: Tuple[str, ...]) -> Iterator[beam.Pipeline]:
    count = _worker_count(pipeline_options)
    if not count:
        with beam.Pipeline(options=pipeline_options) as built:
            yield built
        return
    # As the DirectRunner builds its FnApiRunner: the options go to the workers this way.
    provision_info = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(
        pipeline_options=JobServiceHandle.encode_pipeline_options(pipeline_options.get_all_options())))
    with beam.Pipeline(runner=_ForkedWorkersRunner(count, provision_info, bulk), options=pipeline_options) as built:
        yield built

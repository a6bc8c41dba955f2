"""DirectRunner workers forked by beam_jobs.local_workers: same output as one worker, the
fallback to Beam's own worker processes, and a failing worker.

Each case runs in a fresh interpreter: whether forking is safe depends on what the process
did before (a pytest process may have started gRPC), and these tests must know which path ran.
"""

import json
import re
import subprocess
import sys
import textwrap
import threading

import pytest
from tensorflow_metadata.proto.v0 import statistics_pb2

from beam_jobs import local_workers, quickdraw_to_tfrecord
from tests.conftest import QUICKDRAW, REPO, TAXI
from tests.test_quickdraw_job import output_bytes

FORKED = "worker process(es) forked from this one"
FALLBACK = "worker processes start as new interpreters"
TWO_WORKERS = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]


# Run first by a script that must not fork: a gRPC server started and stopped, as a test
# session or an earlier multi-process pipeline leaves it.
GRPC_FIRST = """
import logging, grpc
from apache_beam.utils import thread_pool_executor
logging.basicConfig(level=logging.INFO)
server = grpc.server(thread_pool_executor.shared_unbounded_instance())
server.add_insecure_port("localhost:0")
server.start()
server.stop(0)
"""


def run_python(code: str, timeout: int = 300, grpc_first: bool = False) -> subprocess.CompletedProcess:
    script = (GRPC_FIRST if grpc_first else "") + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_forked_workers_write_the_bytes_one_worker_writes(tmp_path, shared_data):
    flags = [f"--input={QUICKDRAW}/simplified/*.ndjson", "--num_shards=2"]
    quickdraw_to_tfrecord.run(flags + [f"--output_dir={tmp_path / 'one'}"])
    done = subprocess.run([sys.executable, "-m", "beam_jobs.quickdraw_to_tfrecord", *flags,
                           f"--output_dir={tmp_path / 'forked'}", *TWO_WORKERS],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"2 {FORKED}" in done.stderr
    assert "Discarding unparseable args" not in done.stderr  # the workers' report of Beam's own flags
    one, forked = output_bytes(tmp_path / "one"), output_bytes(tmp_path / "forked")
    assert sum(name.endswith(".tfrecord") for name in one) == 6 and one == forked


def test_after_grpc_has_run_the_workers_are_beams_own(tmp_path):
    done = run_python(f"""
        import apache_beam as beam
        from apache_beam.options.pipeline_options import PipelineOptions
        from beam_jobs import local_workers
        with local_workers.pipeline(PipelineOptions({TWO_WORKERS!r})) as pipeline:
            _ = (pipeline | beam.Create(range(1000)) | beam.Map(lambda x: x * x)
                 | beam.CombineGlobally(sum) | beam.Map(lambda total: open({str(tmp_path / 'sum')!r}, "w").write(str(total))))
    """, grpc_first=True)
    assert done.returncode == 0, done.stderr
    # gRPC's core threads, or the server's pool threads if those are gone by then, say so.
    assert (f"{FALLBACK}: gRPC was started in this process before" in done.stderr
            or f"{FALLBACK}: " in done.stderr and "other Python thread(s) are running" in done.stderr)
    assert FORKED not in done.stderr
    assert (tmp_path / "sum").read_text() == str(sum(x * x for x in range(1000)))


def test_a_failing_forked_worker_fails_the_run_and_leaves_no_process():
    done = run_python(f"""
        import logging, os
        import apache_beam as beam
        from apache_beam.options.pipeline_options import PipelineOptions
        from beam_jobs import local_workers
        logging.basicConfig(level=logging.INFO)

        def check(x):
            if x == 7:
                raise ValueError("bad element 7")
            return x

        try:
            with local_workers.pipeline(PipelineOptions({TWO_WORKERS!r})) as pipeline:
                _ = pipeline | beam.Create(range(20)) | beam.Map(check)
        except Exception as error:
            print("FAILED:", "bad element 7" in str(error))
        children = open(f"/proc/{{os.getpid()}}/task/{{os.getpid()}}/children").read().split()
        print("CHILDREN:", len(children))
    """, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"2 {FORKED}" in done.stderr
    assert "FAILED: True" in done.stdout
    assert "CHILDREN: 0" in done.stdout


def test_no_fork_while_another_thread_runs():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert "other Python thread" in local_workers.fork_unsafe_reason()
    finally:
        stop.set()
        thread.join()


def test_a_thread_that_ends_while_threads_are_listed_is_not_a_reason_to_give_up(monkeypatch):
    # CI once saw "cannot tell" right after a gRPC server stopped: one of its threads was
    # listed in /proc/self/task and gone before its name could be read.
    real_listdir = local_workers.os.listdir
    tasks = real_listdir("/proc/self/task")
    monkeypatch.setattr(local_workers.os, "listdir",
                        lambda path: [*real_listdir(path), "999999999"] if path == "/proc/self/task" else real_listdir(path))
    names = local_workers._thread_names()
    assert names is not None and len(names) == len(tasks)


def test_the_heap_is_frozen_for_the_run_only(tmp_path):
    import gc

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    seen = tmp_path / "frozen"
    before = gc.get_freeze_count()
    with local_workers.pipeline(PipelineOptions([])) as pipeline:
        frozen = gc.get_freeze_count()
        _ = pipeline | beam.Create([1]) | beam.Map(lambda _: seen.write_text(str(gc.get_freeze_count())))
    assert before == 0 and frozen > 100_000  # every object of the imports (Beam, pyarrow, TensorFlow)
    assert int(seen.read_text()) > 100_000  # still frozen while the pipeline runs
    assert gc.get_freeze_count() == 0


def test_a_failed_run_unfreezes_and_a_callers_frozen_heap_is_left_frozen():
    import gc

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    def fail(_):
        raise ValueError("bad element")

    try:
        with local_workers.pipeline(PipelineOptions([])) as pipeline:
            _ = pipeline | beam.Create([1]) | beam.Map(fail)
    except Exception as error:  # Beam wraps the DoFn's error
        assert "bad element" in str(error)
    else:
        raise AssertionError("the run should have failed")
    assert gc.get_freeze_count() == 0
    gc.freeze()
    try:
        with local_workers.pipeline(PipelineOptions([])) as pipeline:
            _ = pipeline | beam.Create([1]) | beam.Map(lambda x: x)
        assert gc.get_freeze_count() > 0  # the caller's freeze is the caller's to undo
    finally:
        gc.unfreeze()


def _features_by_name(path) -> list:
    """A statistics file's datasets with their features in name order (the order TFDV merges
    them in depends on how the work was split)."""
    stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(path.read_bytes())
    return [(dataset.name, dataset.num_examples, sorted(f.SerializeToString(deterministic=True) for f in dataset.features))
            for dataset in stats.datasets]


def test_statistics_job_runs_its_small_stages_in_the_launcher_and_agrees_with_beams_workers(tmp_path, shared_data):
    examples = tmp_path / "examples"
    quickdraw_to_tfrecord.run([f"--input={QUICKDRAW}/simplified/*.ndjson", f"--output_dir={examples}"])
    inputs = {"csv": [f"--input={TAXI / 'data.csv'}"], "examples": [f"--examples_dir={examples}"]}
    for name, flags in inputs.items():
        forked = subprocess.run([sys.executable, "-m", "beam_jobs.statistics", *flags, *TWO_WORKERS,
                                 f"--output_dir={tmp_path / name / 'forked'}"],
                                cwd=REPO, capture_output=True, text=True, timeout=300)
        assert forked.returncode == 0, forked.stderr
        assert f"2 {FORKED}" in forked.stderr
        assert re.search(r"the workers run the [1-9]\d* stage\(s\) holding .*; the [1-9]\d* other \(small\) "
                         r"stage\(s\) run in this process", forked.stderr), forked.stderr
    # The reference: the same job on Beam's own worker processes (gRPC started first, so no fork).
    beams = run_python(f"""
        from beam_jobs import statistics
        for name, flags in {inputs!r}.items():
            statistics.run(flags + {TWO_WORKERS!r} + [f"--output_dir={tmp_path}/{{name}}/beams"])
    """, grpc_first=True)
    assert beams.returncode == 0, beams.stderr
    assert FALLBACK in beams.stderr and FORKED not in beams.stderr
    for name, splits in (("csv", ["all"]), ("examples", ["train", "eval", "test"])):
        for split in splits:
            ours = _features_by_name(tmp_path / name / "forked" / split / "statistics.pb")
            assert ours == _features_by_name(tmp_path / name / "beams" / split / "statistics.pb")
            assert ours[0][1] > 0 and len(ours[0][2]) > 3


def test_the_next_stage_reads_the_workers_outputs_in_the_same_order_whichever_finishes_first(tmp_path):
    # Eight numbers reshuffled to the two workers (the runner deals them out alternately:
    # 0 2 4 6 to one, 1 3 5 7 to the other); one worker is slowed, then the other. A single
    # key's group lists its values in the order the stage's input got them.
    done = run_python(f"""
        import logging
        import apache_beam as beam
        from apache_beam.options.pipeline_options import PipelineOptions
        from beam_jobs import local_workers

        logging.basicConfig(level=logging.INFO)

        def slowed(number, parity):  # functions of a script: they import what they use
            import time
            if number % 2 == parity:
                time.sleep(0.3)
            return ("key", number)

        def write(group, path):
            import json
            with open(path, "w") as handle:
                handle.write(json.dumps(list(group[1])))

        for parity in (0, 1):
            with local_workers.pipeline(PipelineOptions({TWO_WORKERS!r})) as pipeline:
                _ = (pipeline | beam.Create(range(8)) | beam.Map(slowed, parity) | beam.GroupByKey()
                     | beam.Map(write, "{tmp_path}/order%d" % parity))
    """)
    assert done.returncode == 0, done.stderr
    assert f"2 {FORKED}" in done.stderr
    orders = [json.loads((tmp_path / f"order{parity}").read_text()) for parity in (0, 1)]
    assert orders[0] == orders[1] and sorted(orders[0]) == list(range(8))
    halves = {tuple(sorted(orders[0][:4])), tuple(sorted(orders[0][4:]))}
    assert halves == {(0, 2, 4, 6), (1, 3, 5, 7)}  # each worker's part whole, the parts in a fixed order


def test_bulk_names_that_match_no_stage_leave_every_stage_on_the_workers(tmp_path):
    done = run_python(f"""
        import logging
        import apache_beam as beam
        from apache_beam.options.pipeline_options import PipelineOptions
        from beam_jobs import local_workers
        logging.basicConfig(level=logging.INFO)
        with local_workers.pipeline(PipelineOptions({TWO_WORKERS!r}), bulk=["NoSuchTransform"]) as pipeline:
            _ = (pipeline | beam.Create(range(100)) | beam.CombineGlobally(sum)
                 | beam.Map(lambda total: open({str(tmp_path / 'sum')!r}, "w").write(str(total))))
    """)
    assert done.returncode == 0, done.stderr
    assert f"2 {FORKED}" in done.stderr
    assert "no stage holds a transform named NoSuchTransform*: every stage runs on the workers" in done.stderr
    assert "run in this process" not in done.stderr
    assert (tmp_path / "sum").read_text() == str(sum(range(100)))


def test_bulk_is_a_sequence_of_names_not_one_string():
    from apache_beam.options.pipeline_options import PipelineOptions

    with pytest.raises(TypeError, match="not one string"):
        with local_workers.pipeline(PipelineOptions([]), bulk="Read"):
            pass

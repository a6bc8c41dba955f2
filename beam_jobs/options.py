"""Flags shared by the jobs; everything a job does not know goes to Beam's PipelineOptions."""

import argparse
import importlib
import logging
import os
import sys
from typing import Optional

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_jobs import splits


class UsageError(ValueError):
    """A flag or input the user must fix; jobs exit with status 2 on it."""


def comma_list(values):
    """Flattens a repeatable, comma-separated flag (`--input a,b --input c`)."""
    return [item.strip() for value in values or [] for item in value.split(",") if item.strip()]


def add_input_output_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input",
        action="append",
        required=True,
        help="Input file pattern; repeatable or comma-separated; globs and .gz work.",
    )
    parser.add_argument("--output_dir", required=True, help="Directory for all outputs.")


def add_split_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--split_ratios",
        default="80,10,10",
        type=splits.parse_ratios,
        help="Weights of the train,eval,test splits (default 80,10,10).",
    )
    add_shard_args(parser)


AUTO = "auto"


def shard_count(text: str) -> Optional[int]:
    """`--num_shards`: a count of files per split, or `auto` (None; outputs.resolve_num_shards)."""
    if text == AUTO:
        return None
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or {AUTO!r}, got {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {count}")
    return count


def add_shard_args(parser: argparse.ArgumentParser) -> None:
    """How Example TFRecords are written: shared by the ingest and transform jobs."""
    parser.add_argument(
        "--num_shards", type=shard_count, default=AUTO,
        help="TFRecord files per split, or auto (default): about 128 MB (uncompressed) per file in the "
             "largest split, estimated from the input's size before any filter, so files are written and "
             "read in parallel; the count used is in run_summary.json.")
    parser.add_argument(
        "--compression",
        choices=("none", "gzip"),
        default="none",
        help="Compression of the TFRecord files (default none).",
    )


# Beam's default pickler here (2.61) is dill; Beam made cloudpickle its default later (2.65).
# It pickles and unpickles the DoFns faster: pipeline construction and each stage's set-up in
# every worker are shorter (statistics on 1M rows: 0.1 s less on one worker, 0.15 s on two).
DEFAULT_PICKLE_LIBRARY = "cloudpickle"


class JobPipelineOptions(PipelineOptions):
    """Beam's PipelineOptions, whose views (`view_as`) are built once per options class.

    Beam builds a view anew on every call: a parser of every option it knows, which parses
    the flags again (0.2 ms). Building a pipeline asks for one or two per transform: 320 for
    the statistics job, 0.07 s of the launcher's time before any data is read. Every view
    of one options object reads and writes the same values (Beam keeps them in one dict), so
    one view per class is the same thing. Views are not pickled: Beam's __getstate__ may hand
    on a copy of the values, which the views would not see.
    """

    def view_as(self, cls):
        views = self.__dict__.setdefault("_views", {})  # PipelineOptions refuses other attributes
        if cls not in views:
            views[cls] = super().view_as(cls)
        return views[cls]

    def __getstate__(self):
        return {name: value for name, value in super().__getstate__().items() if name != "_views"}


def parse(parser: argparse.ArgumentParser, argv):
    """Splits argv into the job's flags and the pipeline options, as Beam's wordcount does.

    The pipeline options default to --pickle_library=cloudpickle (DEFAULT_PICKLE_LIBRARY),
    put first so that a --pickle_library given (dill, default; abbreviated too) comes later
    and wins.
    """
    known_args, pipeline_args = parser.parse_known_args(argv)
    pipeline_args = [f"--pickle_library={DEFAULT_PICKLE_LIBRARY}", *pipeline_args]
    # The code lives in an installed package, so workers import it: no main session to pickle.
    options = JobPipelineOptions(pipeline_args, save_main_session=False)
    # Recorded now: run summaries name the runner, and the portable runner clears the option.
    known_args.runner = runner_name(options)
    return known_args, options


def runner_name(pipeline_options: PipelineOptions) -> str:
    """The runner the options ask for (DirectRunner when none is named)."""
    return pipeline_options.view_as(StandardOptions).runner or "DirectRunner"


_LIBRARIES = ("tensorflow", "apache_beam", "tensorflow_transform", "tensorflow_data_validation", "tfx_bsl")


# Beam warnings about its own doings, nothing a user can act on: what the DirectRunner's
# worker processes (multi_processing) say of the options and directories the runner gives
# them (relayed by the local job service, or said by a forked worker itself; the launcher's
# own "Discarding unparseable args", a mistyped flag, still shows), and Beam's Top combiner,
# which TFT uses.
_WORKER_START_UP = ("No semi_persistent_directory found", "Discarding unparseable args")
_WORKER_LOGGERS = ("apache_beam.runners.portability.local_job_service", "apache_beam.runners.worker.sdk_worker_main")


def _is_beam_noise(record: logging.LogRecord) -> bool:
    if record.name in _WORKER_LOGGERS:
        return any(text in f"{record.msg} {record.args}" for text in _WORKER_START_UP)
    return record.name.startswith("apache_beam") and "_TopPerBundle" in str(record.msg)


def _library_info_through_root(record: logging.LogRecord) -> bool:
    """False for a library's INFO line logged through the root logger (Beam's BatchElements),
    and for Beam's own noise (_is_beam_noise)."""
    if _is_beam_noise(record):
        return False
    return record.levelno >= logging.WARNING or not any(
        f"{os.sep}{library}{os.sep}" in record.pathname for library in _LIBRARIES)


def run_main(run) -> None:
    """Entry point for `python -m`: INFO logs, and exit status 2 with a readable message on UsageError.

    Under `python -m` the job module is `__main__`, and DoFns pickled from it name classes that
    worker processes cannot find; so the job runs from its importable module instead.
    """
    if run.__module__ == "__main__" and getattr(sys.modules["__main__"], "__spec__", None):
        run = getattr(importlib.import_module(sys.modules["__main__"].__spec__.name), run.__name__)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # The libraries' INFO lines (type hints, runner internals) would bury the jobs' own progress.
    for library in _LIBRARIES:
        logging.getLogger(library).setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_library_info_through_root)
    try:
        run()
    except UsageError as error:
        logging.error("%s", error)
        raise SystemExit(2) from None

"""Where statistics, schemas and anomalies live on disk, and reading them back with clear errors.

The `statistics` and `validate` jobs write one DatasetFeatureStatisticsList per split:

    OUT/<split>/statistics.pb      binary proto (tfdv.load_stats_binary)
    OUT/<split>/statistics.pbtxt   the same as text, when it is small enough to read

`<split>` is train/eval/test for an `--examples_dir`, and `all` for `--input` files.
"""

import os
from typing import Optional, Sequence, Tuple

from apache_beam.io.filesystems import FileSystems
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

from beam_jobs import splits
from beam_jobs.options import UsageError

ALL_SPLIT = "all"
STATS_FILE = "statistics.pb"
STATS_TEXT_FILE = "statistics.pbtxt"
TEXT_LIMIT_BYTES = 2 << 20
# Which split of a statistics directory a schema is inferred from, or compared against.
TRAINING_SPLITS = ("train", ALL_SPLIT)


def stats_path(output_dir: str, split: str) -> str:
    return FileSystems.join(output_dir, split, STATS_FILE)


def write_binary(stats: statistics_pb2.DatasetFeatureStatisticsList, path: str) -> None:
    """The file tfdv.WriteStatisticsToBinaryFile writes (the serialized proto), from a Map: for
    one element, not through a Beam Write and the five stages it adds to the pipeline."""
    with FileSystems.create(path) as handle:
        handle.write(stats.SerializeToString())


def _read(path: str) -> bytes:
    try:
        with FileSystems.open(path) as handle:
            return handle.read()
    except Exception as error:  # Beam wraps every filesystem error in BeamIOError.
        raise UsageError(f"cannot read {path}: {error}") from error


def parse_statistics(data: bytes, path: str) -> statistics_pb2.DatasetFeatureStatisticsList:
    """Binary proto, a one-record TFRecord (tfdv.WriteStatisticsToTFRecord) or text."""
    stats = statistics_pb2.DatasetFeatureStatisticsList()
    try:
        stats.ParseFromString(data)
        if stats.datasets:
            return stats
    except Exception:  # noqa: BLE001 - the protobuf decode error type varies by backend
        pass
    if len(data) > 16:
        import tensorflow as tf  # Only for the TFRecord framing.

        try:
            records = list(tf.data.TFRecordDataset([path]).as_numpy_iterator())
            if len(records) == 1:
                stats.ParseFromString(records[0])
                return stats
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError):
            pass
    try:
        return text_format.Parse(data.decode("utf-8"), statistics_pb2.DatasetFeatureStatisticsList())
    except (UnicodeDecodeError, text_format.ParseError) as error:
        raise UsageError(f"{path} is not a DatasetFeatureStatisticsList (binary, TFRecord or text): "
                         f"{error}") from None


def find_statistics(path: str, preferred_splits: Sequence[str] = TRAINING_SPLITS) -> str:
    """A statistics file, or a `statistics` output directory resolved to its preferred split."""
    for split in preferred_splits:
        candidate = stats_path(path, split)
        if FileSystems.exists(candidate):
            return candidate
    if not FileSystems.exists(path):
        raise UsageError(f"statistics {path!r} do not exist")
    if not os.path.isdir(path):
        return path
    found = [s for s in splits.SPLIT_NAMES + (ALL_SPLIT,) if FileSystems.exists(stats_path(path, s))]
    raise UsageError(f"{path!r} holds no statistics for split {'/'.join(preferred_splits)} "
                     f"(found: {', '.join(found) or 'none'}); pass the file itself")


def load_statistics(path: str, preferred_splits: Sequence[str] = TRAINING_SPLITS
                    ) -> Tuple[statistics_pb2.DatasetFeatureStatisticsList, str]:
    """(statistics, the file they came from)."""
    resolved = find_statistics(path, preferred_splits)
    return parse_statistics(_read(resolved), resolved), resolved


def load_schema(path: str) -> schema_pb2.Schema:
    """A schema .pbtxt read on the launcher; workers get the proto, never the file."""
    try:
        return text_format.Parse(_read(path).decode("utf-8"), schema_pb2.Schema())
    except (UnicodeDecodeError, text_format.ParseError) as error:
        raise UsageError(f"{path} is not a schema in text format: {error}") from None


def write_atomically(path: str, data: bytes) -> None:
    """Writes beside the target, then renames: a reader never sees half a file."""
    if FileSystems.get_scheme(path) is None:
        path = os.path.abspath(path)  # A bare file name: Beam's local filesystem needs a directory.
    directory = os.path.dirname(path)
    if directory and not FileSystems.exists(directory):
        FileSystems.mkdirs(directory)
    temporary = f"{path}.incomplete"
    with FileSystems.create(temporary) as handle:
        handle.write(data)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([temporary], [path])


def write_text(path: str, message) -> None:
    with FileSystems.create(path) as handle:
        handle.write(text_format.MessageToString(message).encode("utf-8"))


def default_split(stats: statistics_pb2.DatasetFeatureStatisticsList) -> statistics_pb2.DatasetFeatureStatisticsList:
    """The unsliced dataset of a (possibly sliced) list: what validation compares."""
    if len(stats.datasets) <= 1:
        return stats
    from tensorflow_data_validation import constants

    for dataset in stats.datasets:
        if dataset.name == constants.DEFAULT_SLICE_KEY:
            result = statistics_pb2.DatasetFeatureStatisticsList()
            result.datasets.add().CopyFrom(dataset)
            return result
    result = statistics_pb2.DatasetFeatureStatisticsList()
    result.datasets.add().CopyFrom(stats.datasets[0])
    return result


def optional_statistics(path: Optional[str], split: str) -> Optional[statistics_pb2.DatasetFeatureStatisticsList]:
    """Baseline or serving statistics for `split`: the same split if the directory has it."""
    if not path:
        return None
    stats, _ = load_statistics(path, (split,) + TRAINING_SPLITS)
    return default_split(stats)

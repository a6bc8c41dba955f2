"""The taxi ingest -> analyze_and_transform -> transform chain, run once per test session."""

import atexit
import functools
import glob
import shutil
import tempfile

import tensorflow as tf

from beam_jobs import analyze_and_transform, splits, taxi_csv_to_tfrecord, transform
from tests.conftest import TAXI  # noqa: F401 (re-exported for the tests)


@functools.lru_cache(maxsize=None)
def chain() -> dict:
    """Directories of: data.csv and data2.csv Examples, data.csv analyzed+transformed, data2 transformed."""
    root = tempfile.mkdtemp(prefix="taxi_chain_")
    atexit.register(shutil.rmtree, root, True)
    dirs = {name: f"{root}/{name}" for name in ("examples", "examples2", "transformed", "transformed2")}
    taxi_csv_to_tfrecord.run(["--input", str(TAXI / "data.csv"), "--output_dir", dirs["examples"]])
    taxi_csv_to_tfrecord.run(["--input", str(TAXI / "data2.csv"), "--output_dir", dirs["examples2"]])
    dirs["summary"] = analyze_and_transform.run([
        "--dataset", "taxi", "--examples_dir", dirs["examples"], "--output_dir", dirs["transformed"]])
    dirs["summary2"] = transform.run([
        "--transform_dir", dirs["transformed"], "--examples_dir", dirs["examples2"],
        "--output_dir", dirs["transformed2"]])
    return dirs


def records(directory: str, split: str) -> list:
    out = []
    for path in sorted(glob.glob(f"{directory}/{split}-*-of-*.tfrecord")):
        out.extend(r.numpy() for r in tf.data.TFRecordDataset(path))
    return out


def raw_and_transformed(examples_dir: str, transformed_dir: str, split: str) -> list:
    """(raw Example bytes, transformed Example bytes) pairs of one split.

    The transform jobs sort each shard by the hash of the raw record (equal raw records give
    equal outputs), so sorting the raw records the same way lines them up.
    """
    raw = sorted(records(examples_dir, split), key=lambda r: (splits.key_hash(r), r))
    transformed = records(transformed_dir, split)
    assert len(raw) == len(transformed)
    return list(zip(raw, transformed))


def features_of(serialized: bytes) -> dict:
    """Example bytes -> {name: first value} (every taxi feature holds at most one value)."""
    example = tf.train.Example.FromString(serialized)
    out = {}
    for name, feature in example.features.feature.items():
        values = getattr(feature, feature.WhichOneof("kind")).value
        out[name] = values[0]
    return out

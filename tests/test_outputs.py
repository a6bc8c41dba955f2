"""Shared output pieces: TFRecord framing, staged publication, hash splits."""

import hashlib
import os

import pytest
import tensorflow as tf

from beam_jobs import outputs, splits

RECORDS = [b"", b"x", bytes(range(256)) * 40, "é".encode() * 3000]


@pytest.mark.parametrize("records", [
    RECORDS,
    [bytes([i % 251]) * (i % 97) for i in range(10_000)],  # several chunks of 1,024 records, in order
], ids=["odd_records", "many_chunks"])
def test_tfrecords_are_the_bytes_tensorflow_writes(tmp_path, records):
    ours, theirs = str(tmp_path / "ours.tfrecord"), str(tmp_path / "tf.tfrecord")
    outputs.write_tfrecords(ours, iter(records), "none")
    with tf.io.TFRecordWriter(theirs) as writer:
        for record in records:
            writer.write(record)
    assert open(ours, "rb").read() == open(theirs, "rb").read()


def test_gzip_tfrecords_read_back_with_tf_data(tmp_path):
    path = str(tmp_path / "ours.tfrecord.gz")
    outputs.write_tfrecords(path, iter(RECORDS), "gzip")
    assert [r.numpy() for r in tf.data.TFRecordDataset(path, compression_type="GZIP")] == RECORDS
    again = str(tmp_path / "again.tfrecord.gz")
    outputs.write_tfrecords(again, iter(RECORDS), "gzip")
    assert open(path, "rb").read() == open(again, "rb").read()


def test_publish_replaces_only_the_jobs_own_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train-00000-of-00001.tfrecord").write_bytes(b"old")
    (out / "notes.txt").write_text("the user's")
    with outputs.StagedOutput(str(out), ["train-*-of-*.tfrecord"]) as staged:
        with open(staged.staged_path("train-00000-of-00002.tfrecord"), "wb") as handle:
            handle.write(b"new")
        with open(os.path.join(staged.temp_dir, "scratch"), "wb") as handle:
            handle.write(b"never published")
        staged.publish({"read": 1})
    assert sorted(os.listdir(out)) == ["notes.txt", "run_summary.json", "train-00000-of-00002.tfrecord"]


def test_a_failure_inside_the_stage_leaves_nothing_behind(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with outputs.StagedOutput(str(out), ["*.tfrecord"]) as staged:
            with open(staged.staged_path("train-00000-of-00001.tfrecord"), "wb") as handle:
                handle.write(b"half")
            raise RuntimeError("pipeline failed")
    assert os.listdir(out) == []


def test_split_ratios_and_the_documented_hash_rule():
    assert splits.parse_ratios("80,10,10") == (0.8, 0.1, 0.1)
    assert splits.parse_ratios("1,1,0") == (0.5, 0.5, 0.0)
    for bad in ("80,20", "a,b,c", "-1,1,1", "0,0,0"):
        with pytest.raises(ValueError):
            splits.parse_ratios(bad)
    keys = [f"key{i}".encode() for i in range(2000)]
    expected, expected_shards = [], []
    for key in keys:
        bucket = int.from_bytes(hashlib.sha256(b"split:" + key).digest()[:8], "big") % 10_000
        expected.append(0 if bucket < 8000 else 1 if bucket < 9000 else 2)
        expected_shards.append(int.from_bytes(hashlib.sha256(b"shard:" + key).digest()[:8], "big") % 7)
    assert splits.split_indices(keys, (0.8, 0.1, 0.1)).tolist() == expected
    assert splits.shard_indices(keys, 7).tolist() == expected_shards
    assert set(splits.split_indices(keys, (0.5, 0.5, 0.0)).tolist()) == {0, 1}
    assert set(splits.split_indices(keys, (0.0, 0.0, 1.0)).tolist()) == {2}


def test_a_bare_file_name_is_written_in_the_working_directory(tmp_path, monkeypatch):
    from beam_jobs import stats_io

    monkeypatch.chdir(tmp_path)
    stats_io.write_atomically("schema.pbtxt", b"feature {}")
    assert (tmp_path / "schema.pbtxt").read_bytes() == b"feature {}"
    assert os.listdir(tmp_path) == ["schema.pbtxt"]


def test_spilled_runs_merge_into_sorted_shards_and_empty_shards_exist(tmp_path):
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    runs_dir, out_dir = tmp_path / "runs", tmp_path / "out"
    runs_dir.mkdir(), out_dir.mkdir()
    rows = [(key * 7919 % 1000, f"r{key * 7919 % 1000}".encode()) for key in range(300)]
    buffer = outputs.SpillBuffer(str(runs_dir), limit_bytes=200)
    runs = []
    for key, record in rows:
        buffer.add(("a", key % 2), (key, record))
        if buffer.full:
            runs.extend(buffer.spill())
    runs.extend(buffer.spill())
    assert len(runs) > 4 and not list(buffer.spill())
    names = {("a", 0): "a0.txt", ("a", 1): "a1.txt", ("b", 0): "b0.txt"}
    with TestPipeline() as pipeline:
        written = (pipeline | beam.Create(runs)
                   | outputs.WriteSpilledShards(str(out_dir), names, outputs.write_lines))
        assert_that(written, equal_to([(("a", 0), 150), (("a", 1), 150), (("b", 0), 0)]))
    for parity, name in ((0, "a0.txt"), (1, "a1.txt")):
        expected = [record for key, record in sorted(rows) if key % 2 == parity]
        assert (out_dir / name).read_bytes().split(b"\n")[:-1] == expected
    assert (out_dir / "b0.txt").read_bytes() == b""


def test_a_killed_runs_staging_is_reported_not_deleted(tmp_path, caplog):
    out = tmp_path / "out"
    killed = outputs.StagedOutput(str(out), ["*.tfrecord"])
    killed.__enter__()  # and never left: as if the process had been killed
    with outputs.StagedOutput(str(out), ["*.tfrecord"]) as staged:
        staged.publish({"read": 0})
    assert os.path.isdir(killed.staging_dir)
    assert sorted(os.listdir(out)) == [os.path.basename(killed.staging_dir), "run_summary.json"]
    assert any(killed.staging_dir in r.getMessage() and "did not finish" in r.getMessage() for r in caplog.records)


def test_more_runs_than_the_merge_opens_at_once_still_merge_in_order(tmp_path):
    rows = [(key * 7919 % 10_000, f"r{key}".encode()) for key in range(10_000)]
    paths = []
    for run in range(150):
        path = str(tmp_path / f"run-{run:03d}.run")
        outputs.write_sorted_run(path, rows[run::150])
        paths.append(path)
    assert list(outputs.merge_sorted_runs(paths)) == sorted(rows)


def test_split_boundaries_are_the_step_by_step_rounded_sums():
    keys = [f"key{i}".encode() for i in range(5000)]
    ratios = splits.parse_ratios("1,2,19997")
    bounds, total = [], 0.0
    for ratio in ratios:
        total += ratio * 10_000
        bounds.append(round(total))
    expected = []
    for key in keys:
        bucket = int.from_bytes(hashlib.sha256(b"split:" + key).digest()[:8], "big") % 10_000
        expected.append(next(i for i, bound in enumerate(bounds) if bucket < bound))
    assert splits.split_indices(keys, ratios).tolist() == expected

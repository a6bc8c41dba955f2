"""Shared output pieces: TFRecord framing, staged publication, hash splits."""

import hashlib
import os

import pytest
import tensorflow as tf

from beam_jobs import outputs, splits

RECORDS = [b"", b"x", bytes(range(256)) * 40, "é".encode() * 3000]


def test_tfrecords_are_the_bytes_tensorflow_writes(tmp_path):
    ours, theirs = str(tmp_path / "ours.tfrecord"), str(tmp_path / "tf.tfrecord")
    outputs.write_tfrecords(ours, iter(RECORDS), "none")
    with tf.io.TFRecordWriter(theirs) as writer:
        for record in RECORDS:
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
    for i in range(2000):
        key = f"key{i}".encode()
        bucket = int.from_bytes(hashlib.sha256(b"split:" + key).digest()[:8], "big") % 10_000
        assert splits.split_index(key, (0.8, 0.1, 0.1)) == (0 if bucket < 8000 else 1 if bucket < 9000 else 2)
        assert splits.split_index(key, (0.5, 0.5, 0.0)) != 2


def test_a_bare_file_name_is_written_in_the_working_directory(tmp_path, monkeypatch):
    from beam_jobs import stats_io

    monkeypatch.chdir(tmp_path)
    stats_io.write_atomically("schema.pbtxt", b"feature {}")
    assert (tmp_path / "schema.pbtxt").read_bytes() == b"feature {}"
    assert os.listdir(tmp_path) == ["schema.pbtxt"]

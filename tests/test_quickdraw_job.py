"""End-to-end runs of `beam_jobs.quickdraw_to_tfrecord` on the real QuickDraw samples.

Expected values come from reading the ndjson files with the json module and from the
documented split rule (sha256 of b"split:" + key_id, 10,000 buckets, 80/10/10), never from
the job's own code.
"""

import glob
import gzip
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from beam_jobs import quickdraw_to_tfrecord
from tests.conftest import QUICKDRAW, REPO
from tests.test_strokes import BAD_LINES
from transforms.quickdraw import features

SPLITS = ("train", "eval", "test")


def source_records(pattern):
    records = []
    for path in sorted(glob.glob(str(QUICKDRAW / pattern))):
        with open(path, encoding="utf-8") as handle:
            records.extend(json.loads(line) for line in handle if line.strip())
    return records


def expected_split(key_id: str, ratios=(8000, 9000)) -> str:
    bucket = int.from_bytes(hashlib.sha256(b"split:" + key_id.encode()).digest()[:8], "big") % 10_000
    return "train" if bucket < ratios[0] else "eval" if bucket < ratios[1] else "test"


def read_examples(output_dir, split, image_size=64, compression=""):
    """Parses a split with tf.data and the published feature spec only."""
    files = sorted(glob.glob(os.path.join(output_dir, f"{split}-*")))
    spec = features.feature_spec(image_size)
    dataset = tf.data.TFRecordDataset(files, compression_type=compression).map(
        lambda record: tf.io.parse_single_example(record, spec))
    return [{k: (v.values.numpy() if isinstance(v, tf.SparseTensor) else v.numpy()) for k, v in ex.items()}
            for ex in dataset]


def output_bytes(output_dir):
    names = sorted(os.path.relpath(p, output_dir) for p in glob.glob(os.path.join(output_dir, "**"), recursive=True)
                   if os.path.isfile(p) and not p.endswith("run_summary.json"))
    return {name: open(os.path.join(output_dir, name), "rb").read() for name in names}


@pytest.fixture(scope="module")
def simplified_run(tmp_path_factory, shared_data):
    out = str(tmp_path_factory.mktemp("simplified"))
    summary = quickdraw_to_tfrecord.run([
        f"--input={QUICKDRAW}/simplified/*.ndjson", f"--output_dir={out}", "--num_shards=2"])
    return out, summary


def test_counts_per_split_match_the_split_rule(simplified_run):
    out, summary = simplified_run
    records = source_records("simplified/*.ndjson")
    expected = {split: sum(expected_split(r["key_id"]) == split for r in records) for split in SPLITS}
    assert summary["read"] == len(records) == 8600
    assert summary["written"] == expected
    assert (summary["blank"], summary["filtered"], summary["rejected"]) == (0, 0, {})
    assert summary["classes"] == len({r["word"] for r in records}) == 344
    on_disk = json.load(open(os.path.join(out, "run_summary.json")))
    assert {k: on_disk[k] for k in ("read", "written", "rejected", "blank", "filtered", "classes")} == {
        k: summary[k] for k in ("read", "written", "rejected", "blank", "filtered", "classes")}
    assert sorted(os.listdir(out)) == sorted(
        [f"{s}-{i:05d}-of-00002.tfrecord" for s in SPLITS for i in range(2)]
        + ["dead_letter", "labels.txt", "run_summary.json", "samples.png"])


def test_examples_read_back_with_the_published_spec(simplified_run):
    out, _ = simplified_run
    by_key = {r["key_id"]: r for r in source_records("simplified/*.ndjson")}
    labels = open(os.path.join(out, "labels.txt"), encoding="utf-8").read().splitlines()
    assert labels == sorted({r["word"] for r in by_key.values()})
    seen = set()
    for split in SPLITS:
        for example in read_examples(out, split):
            key = example["key_id"].decode()
            source = by_key[key]
            seen.add(key)
            assert expected_split(key) == split
            assert labels[example["label"]] == source["word"] == example["word"].decode()
            assert example["countrycode"].decode() == source["countrycode"]
            assert example["timestamp"].decode() == source["timestamp"]
            assert example["recognized"] == int(source["recognized"])
            image = example["img_64"]
            assert image.shape == (4096,) and image.min() == 0 and 200 <= image.max() <= 255
            points = sum(len(stroke[0]) for stroke in source["drawing"])
            assert example["ink_shape"].tolist() == [points, 3]
            ink = example["ink"].reshape(points, 3)
            assert ink[:, 2].sum() == len(source["drawing"])
            # Offsets add up to positions in a unit box.
            assert np.cumsum(ink[:, :2], axis=0).min() >= -1e-6 and np.cumsum(ink[:, :2], axis=0).max() <= 1 + 1e-6
    assert seen == set(by_key)


def test_two_workers_write_the_same_bytes_as_one(simplified_run, tmp_path):
    out, _ = simplified_run
    again = str(tmp_path / "two_workers")
    quickdraw_to_tfrecord.run([
        f"--input={QUICKDRAW}/simplified/*.ndjson", f"--output_dir={again}", "--num_shards=2",
        "--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    first, second = output_bytes(out), output_bytes(again)
    assert sorted(first) == sorted(second)
    for name in first:
        assert first[name] == second[name], name


def test_raw_and_simplified_versions_of_a_drawing_rasterize_alike(simplified_run, tmp_path):
    out, _ = simplified_run
    raw_out = str(tmp_path / "raw")
    summary = quickdraw_to_tfrecord.run([f"--input={QUICKDRAW}/raw/*.ndjson", f"--output_dir={raw_out}"])
    raw_records = source_records("raw/*.ndjson")
    assert summary["read"] == len(raw_records) and sum(summary["written"].values()) == len(raw_records)
    simplified = {e["key_id"]: e["img_64"] for s in SPLITS for e in read_examples(out, s)}
    raw = {e["key_id"]: e["img_64"] for s in SPLITS for e in read_examples(raw_out, s)}
    common = sorted(set(simplified) & set(raw))
    assert len(common) == 449
    diffs = np.array([np.abs(simplified[k] - raw[k]).mean() for k in common])
    # Mean absolute difference per pixel, out of 255: none for most drawings, small for all.
    assert np.median(diffs) == 0
    assert np.percentile(diffs, 90) < 0.5
    assert diffs.max() < 5.0


def test_bad_lines_go_to_dead_letters_with_file_line_and_reason(tmp_path, shared_data):
    good = open(glob.glob(str(QUICKDRAW / "simplified" / "cat.ndjson"))[0], "rb").read().splitlines()[:5]
    # A word whose only drawing is rejected gets no label: labels.txt lists the words written.
    bad_lines = BAD_LINES + [(json.dumps({"word": "ghost", "countrycode": "US", "timestamp": "t", "recognized": True,
                                          "key_id": "9", "drawing": []}).encode(), "no_strokes")]
    lines = good[:2] + [b"", b"   "] + [bad for bad, _ in bad_lines] + good[2:]
    data = tmp_path / "in put"
    data.mkdir()
    with gzip.open(data / "mixed cats.ndjson.gz", "wb") as handle:
        handle.write(b"\n".join(lines) + b"\n")
    out = str(tmp_path / "out")
    summary = quickdraw_to_tfrecord.run([f"--input={data}/*.gz", f"--output_dir={out}"])
    expected_reasons = {}
    for _, reason in bad_lines:
        expected_reasons[reason] = expected_reasons.get(reason, 0) + 1
    assert summary["read"] == len(lines)
    assert summary["blank"] == 2
    assert summary["rejected"] == expected_reasons
    assert sum(summary["written"].values()) == 5
    letters = [json.loads(line) for line in open(glob.glob(f"{out}/dead_letter/*.jsonl")[0], encoding="utf-8")]
    assert [(l["line"], l["reason"]) for l in letters] == [
        (5 + i, reason) for i, (_, reason) in enumerate(bad_lines)]
    assert {l["file"] for l in letters} == {str(data / "mixed cats.ndjson.gz")}
    assert [l["record"].encode() for l in letters] == [bad for bad, _ in bad_lines]
    assert all(l["detail"] for l in letters)
    assert open(os.path.join(out, "labels.txt")).read() == "cat\n" and summary["classes"] == 1
    assert {int(e["label"]) for s in SPLITS for e in read_examples(out, s)} == {0}


def test_a_run_where_every_line_is_rejected_publishes_empty_shards(tmp_path):
    source = tmp_path / "bad.ndjson"
    source.write_bytes(b"".join(bad + b"\n" for bad, _ in BAD_LINES[:5]))
    out = str(tmp_path / "out")
    summary = quickdraw_to_tfrecord.run([f"--input={source}", f"--output_dir={out}"])
    assert summary["read"] == 5 and sum(summary["rejected"].values()) == 5
    assert summary["written"] == {"train": 0, "eval": 0, "test": 0} and summary["classes"] == 0
    assert open(os.path.join(out, "labels.txt")).read() == ""
    assert all(os.path.getsize(os.path.join(out, f"{s}-00000-of-00001.tfrecord")) == 0 for s in SPLITS)


def test_filters_choose_deterministically(tmp_path, shared_data):
    categories = tmp_path / "categories.txt"
    categories.write_text("cat\ndog\nThe Eiffel Tower\n", encoding="utf-8")
    out = str(tmp_path / "out")
    summary = quickdraw_to_tfrecord.run([
        f"--input={QUICKDRAW}/simplified/*.ndjson", f"--output_dir={out}", "--recognized_only",
        f"--categories={categories}", "--max_per_category=4", "--split_ratios=50,50,0"])
    records = source_records("simplified/*.ndjson")
    kept = []
    for word in ("The Eiffel Tower", "cat", "dog"):
        candidates = [r for r in records if r["word"] == word and r["recognized"]]
        candidates.sort(key=lambda r: hashlib.sha256(r["key_id"].encode()).digest()[:8])
        kept += candidates[:4]
    assert summary["filtered"] == len(records) - len(kept)
    assert summary["classes"] == 3
    got = {e["key_id"].decode(): e for s in SPLITS for e in read_examples(out, s)}
    assert set(got) == {r["key_id"] for r in kept}
    assert summary["written"]["test"] == 0
    assert summary["written"] == {
        s: sum(expected_split(r["key_id"], (5000, 10_000)) == s for r in kept) for s in SPLITS}
    assert open(os.path.join(out, "labels.txt")).read() == "The Eiffel Tower\ncat\ndog\n"


def test_small_images_gzip_output_and_wide_pen(tmp_path, shared_data):
    out = str(tmp_path / "out")
    summary = quickdraw_to_tfrecord.run([
        f"--input={QUICKDRAW}/raw/cat.ndjson,{QUICKDRAW}/simplified/cat.ndjson", f"--output_dir={out}",
        "--image_size=28", "--line_width=2", "--compression=gzip"])
    assert all(name.endswith(".tfrecord.gz") for name in os.listdir(out) if "-of-" in name)
    examples = [e for s in SPLITS for e in read_examples(out, s, image_size=28, compression="GZIP")]
    assert len(examples) == sum(summary["written"].values()) == summary["read"]
    assert all(e["img_28"].shape == (784,) and 200 <= e["img_28"].max() <= 255 for e in examples)


def test_a_failed_run_publishes_nothing_and_keeps_the_previous_output(tmp_path, shared_data):
    out = str(tmp_path / "out")
    quickdraw_to_tfrecord.run([f"--input={QUICKDRAW}/simplified/cat.ndjson", f"--output_dir={out}"])
    before = output_bytes(out)
    broken = tmp_path / "broken.ndjson.gz"
    broken.write_bytes(gzip.compress(open(QUICKDRAW / "simplified" / "dog.ndjson", "rb").read())[:-40])
    with pytest.raises(Exception):
        quickdraw_to_tfrecord.run([f"--input={broken}", f"--output_dir={out}"])
    assert output_bytes(out) == before
    assert not [name for name in os.listdir(out) if name.startswith(".incomplete")]
    fresh = str(tmp_path / "fresh")
    with pytest.raises(Exception):
        quickdraw_to_tfrecord.run([f"--input={broken}", f"--output_dir={fresh}"])
    assert not os.path.exists(os.path.join(fresh, "run_summary.json"))
    assert not glob.glob(os.path.join(fresh, "*.tfrecord"))


def test_bad_usage_exits_2_with_a_message(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "beam_jobs.quickdraw_to_tfrecord", "--input", str(tmp_path / "none-*.ndjson"),
         "--output_dir", str(tmp_path / "out")],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "matches no file" in result.stderr
    assert not os.path.exists(tmp_path / "out")


def test_num_shards_auto_writes_what_the_same_count_given_explicitly_writes(tmp_path, monkeypatch, shared_data):
    from beam_jobs import outputs

    flags = [f"--input={QUICKDRAW}/raw/*.ndjson", "--image_size=28"]
    paths = sorted(glob.glob(str(QUICKDRAW / "raw" / "*.ndjson")))
    # Files of a third of the largest split's estimated bytes (and a little more): three per split.
    monkeypatch.setattr(outputs, "SHARD_BYTES",
                        outputs.largest_split_bytes(quickdraw_to_tfrecord.example_bytes_estimate(paths, 28),
                                                    (0.8, 0.1, 0.1)) // 3 + 1)
    auto = quickdraw_to_tfrecord.run(flags + [f"--output_dir={tmp_path / 'auto'}"])
    given = quickdraw_to_tfrecord.run(flags + [f"--output_dir={tmp_path / 'given'}", "--num_shards=3"])
    assert auto["options"]["num_shards"] == given["options"]["num_shards"] == 3
    first, second = output_bytes(str(tmp_path / "auto")), output_bytes(str(tmp_path / "given"))
    assert sorted(name for name in first if name.endswith(".tfrecord")) == sorted(
        f"{split}-{shard:05d}-of-00003.tfrecord" for split in SPLITS for shard in range(3))
    assert first == second
    assert sum(auto["written"].values()) == len(source_records("raw/*.ndjson"))
    # About the size asked for (a third of the largest split's estimate): an estimate, so within half of it.
    largest = max(len(data) for name, data in first.items() if name.endswith(".tfrecord"))
    assert 0.5 * outputs.SHARD_BYTES <= largest <= 1.5 * outputs.SHARD_BYTES


def test_an_empty_first_file_does_not_change_the_auto_file_count(tmp_path, shared_data):
    # Drawings are counted from the files' first lines: an empty file (sorted first) has none.
    (tmp_path / "0-empty.ndjson").write_bytes(b"")
    flags = [f"--input={tmp_path / '0-empty.ndjson'},{QUICKDRAW}/raw/*.ndjson", "--image_size=28"]
    with_empty = quickdraw_to_tfrecord.run(flags + [f"--output_dir={tmp_path / 'out'}"])
    assert with_empty["options"]["num_shards"] == 1
    assert sum(with_empty["written"].values()) == len(source_records("raw/*.ndjson"))

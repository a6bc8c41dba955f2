"""beam_jobs.taxi_csv_to_tfrecord on the real taxi sample and on hand-made bad records.

Expected values come from Python's csv module and plain float/int parsing, not from the job.
"""

import csv
import glob
import hashlib
import json
import math
import subprocess
import sys

import pytest
import tensorflow as tf

from beam_jobs import csv_rows, taxi_csv_to_tfrecord
from tests.conftest import REPO, TAXI

SCHEMA_TYPES = taxi_csv_to_tfrecord.column_types(taxi_csv_to_tfrecord.load_schema(taxi_csv_to_tfrecord.DEFAULT_SCHEMA))


def read_examples(directory, split="*"):
    records = []
    for path in sorted(glob.glob(f"{directory}/{split}-*-of-*.tfrecord")):
        records.extend(r.numpy() for r in tf.data.TFRecordDataset(path))
    return records


def example_row(serialized):
    """An Example as a sorted tuple of (name, value) for its present features."""
    example = tf.train.Example.FromString(serialized)
    row = []
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        values = list(getattr(feature, kind).value)
        assert len(values) == 1, (name, values)
        row.append((name, values[0]))
    return tuple(sorted(row))


def expected_row(header, fields):
    """The independent expectation: empty -> absent, INT via int(float()), FLOAT as float32."""
    row = []
    for name, text in zip(header, fields):
        if text == "":
            continue
        kind = SCHEMA_TYPES[name]
        if kind == "INT":
            value = float(text)
            assert value == math.floor(value)
            row.append((name, int(value)))
        elif kind == "FLOAT":
            row.append((name, float(tf.constant(float(text), tf.float32).numpy())))
        else:
            row.append((name, text.encode()))
    return tuple(sorted(row))


def csv_rows_of(path):
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return header, [row for row in reader]


@pytest.fixture(scope="module")
def data_out(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("taxi_data")
    summary = taxi_csv_to_tfrecord.run(["--input", str(TAXI / "data.csv"), "--output_dir", str(out)])
    return out, summary


@pytest.fixture(scope="module")
def data2_out(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("taxi_data2")
    summary = taxi_csv_to_tfrecord.run(["--input", str(TAXI / "data2.csv"), "--output_dir", str(out)])
    return out, summary



def test_real_data_every_row_written_with_schema_types(data_out):
    out, summary = data_out
    header, rows = csv_rows_of(TAXI / "data.csv")
    assert summary["read"] == len(rows) == 15002
    assert summary["rejected"] == {} and summary["blank"] == 0
    assert sum(summary["written"].values()) == len(rows)
    for split, count in summary["written"].items():
        assert len(read_examples(out, split)) == count
    got = sorted(example_row(r) for r in read_examples(out))
    expected = sorted(expected_row(header, fields) for fields in rows)
    assert got == expected
    assert json.loads((out / "run_summary.json").read_text())["read"] == 15002


def test_empty_cells_are_absent_not_zero(data_out):
    out, _ = data_out
    header, rows = csv_rows_of(TAXI / "data.csv")
    examples = [tf.train.Example.FromString(r) for r in read_examples(out)]
    for column in ("company", "pickup_census_tract", "dropoff_latitude"):
        empty = sum(1 for fields in rows if fields[header.index(column)] == "")
        assert sum(1 for e in examples if column not in e.features.feature) == empty > 0
    fare = examples[0].features.feature["fare"]
    assert fare.WhichOneof("kind") == "float_list"
    assert examples[0].features.feature["trip_start_hour"].WhichOneof("kind") == "int64_list"


def test_integral_floats_in_int_columns_give_the_same_examples(data_out, data2_out):
    (out, _), (out2, summary2) = data_out, data2_out
    assert summary2["read"] == 5000 and summary2["rejected"] == {}
    header, rows = csv_rows_of(TAXI / "data.csv")
    header2, rows2 = csv_rows_of(TAXI / "data2.csv")
    assert header == header2
    common = {expected_row(header, f) for f in rows} & {expected_row(header, f) for f in rows2}
    assert len(common) > 2000
    shared = set(read_examples(out)) & set(read_examples(out2))
    assert len(shared) == len(common)


BAD_CSV = (
    "\ufefffare,trip_start_hour,company,payment_type\r\n"  # BOM and CRLF
    "10.5,3,\"Comma, Inc.\",Cash\r\n"  # line 2: quoted comma
    "11,4,\"Multi\r\nLine \"\"Cab\"\"\",Credit Card\r\n"  # lines 3-4: quoted newline and quotes
    "twelve,5,A,Cash\r\n"  # line 5: not a number
    "12,7.5,B,Cash\r\n"  # line 6: not an integer
    "13,8,C\r\n"  # line 7: wrong column count
    "\r\n"  # line 8: blank
    "14,9.0,,Cash\r\n"  # line 9: integral float, empty company
)


def test_malformed_rows_go_to_dead_letters_with_line_and_column(tmp_path):
    source = tmp_path / "bad.csv"
    source.write_bytes(BAD_CSV.encode("utf-8"))
    out = tmp_path / "out"
    summary = taxi_csv_to_tfrecord.run(["--input", str(source), "--output_dir", str(out)])
    assert summary["read"] == 7 and summary["blank"] == 1
    assert summary["rejected"] == {"not_a_number": 1, "not_an_integer": 1, "wrong_column_count": 1}
    assert sum(summary["written"].values()) == 3
    letters = [json.loads(line) for line in (out / "dead_letter" / "dead_letter-00000-of-00001.jsonl").open()]
    assert [(l["line"], l.get("column"), l["reason"]) for l in letters] == [
        (5, "fare", "not_a_number"), (6, "trip_start_hour", "not_an_integer"), (7, None, "wrong_column_count")]
    assert all(l["file"] == str(source) for l in letters)
    assert letters[0]["record"] == "twelve,5,A,Cash"
    rows = sorted(example_row(r) for r in read_examples(out))
    assert rows == sorted([
        expected_row(["fare", "trip_start_hour", "company", "payment_type"], f)
        for f in (["10.5", "3", "Comma, Inc.", "Cash"], ["11", "4", 'Multi\r\nLine "Cab"', "Credit Card"],
                  ["14", "9", "", "Cash"])
    ])


def test_headerless_file_with_column_names_and_split_key(tmp_path):
    source = tmp_path / "headerless.csv"
    source.write_text("".join(f"{i}.5,{i % 24},Co{i % 3},Cash\n" for i in range(300)))
    out = tmp_path / "out"
    summary = taxi_csv_to_tfrecord.run([
        "--input", str(source), "--output_dir", str(out),
        "--column_names", "fare,trip_start_hour,company,payment_type", "--split_key", "company"])
    assert summary["read"] == 300 and sum(summary["written"].values()) == 300
    for split in ("train", "eval", "test"):
        companies = {tf.train.Example.FromString(r).features.feature["company"].bytes_list.value[0]
                     for r in read_examples(out, split)}
        for other in {"train", "eval", "test"} - {split}:
            others = {tf.train.Example.FromString(r).features.feature["company"].bytes_list.value[0]
                      for r in read_examples(out, other)}
            assert not companies & others
    # Inside a shard, the order is the hash of the whole record, not of the split key (whose
    # few values would make key ranges of very different sizes): then the line.
    lines = source.read_text().splitlines()
    order = sorted(range(300), key=lambda i: (
        hashlib.sha256("\x1f".join(lines[i].split(",")).encode()).digest()[:8], i))
    fares = [round(tf.train.Example.FromString(r).features.feature["fare"].float_list.value[0], 1)
             for r in read_examples(out, "train")]
    assert fares == [i + 0.5 for i in order if i % 3 in {int(c[2:]) for c in train_companies(out)}]


def train_companies(out):
    return {tf.train.Example.FromString(r).features.feature["company"].bytes_list.value[0].decode()
            for r in read_examples(out, "train")}


def test_same_bytes_in_another_process_with_more_workers_and_smaller_batches(tmp_path, data_out):
    out, _ = data_out
    again = tmp_path / "again"
    subprocess.run([
        sys.executable, "-m", "beam_jobs.taxi_csv_to_tfrecord",
        "--input", str(TAXI / "data.csv"), "--output_dir", str(again), "--batch_size", "700",
        "--direct_num_workers=2", "--direct_running_mode=multi_threading"], check=True, cwd=REPO)
    for path in sorted(glob.glob(f"{out}/*.tfrecord")):
        assert (again / path.rsplit("/", 1)[1]).read_bytes() == open(path, "rb").read()


def test_unknown_header_column_is_a_usage_error(tmp_path):
    source = tmp_path / "odd.csv"
    source.write_text("fare,colour\n1,red\n")
    with pytest.raises(taxi_csv_to_tfrecord.options.UsageError, match="colour"):
        taxi_csv_to_tfrecord.run(["--input", str(source), "--output_dir", str(tmp_path / "out")])


@pytest.mark.parametrize("content, message", [
    (b"", r"empty\.csv:1: no header line"),
    (b"\nfare,tips\n1,2\n", r"empty\.csv:1: no header line"),
    (b"fare,,tips\n1,2,3\n", r"empty\.csv:1: the CSV header must name every column"),
    (b"fare,tips,fare\n1,2,3\n", r"empty\.csv:1: the CSV header repeats a column name"),
    (b"fare,\xff\n1,2\n", r"empty\.csv:1: cannot read the CSV header"),
])
def test_a_file_without_a_usable_header_is_a_usage_error_naming_it(tmp_path, content, message):
    source = tmp_path / "empty.csv"
    source.write_bytes(content)
    with pytest.raises(taxi_csv_to_tfrecord.options.UsageError, match=message):
        taxi_csv_to_tfrecord.run(["--input", str(source), "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_header_bom_crlf_and_spaces_around_names_are_tolerated(tmp_path):
    from beam_jobs import csv_rows

    source = tmp_path / "bom.csv"
    source.write_bytes(b"\xef\xbb\xbffare, tips ,company\r\n1,2,x\r\n")
    assert csv_rows.read_header(str(source)) == ["fare", "tips", "company"]


@pytest.mark.parametrize("text, value", [("8", 8), ("8.0", 8), ("17031081000.0", 17031081000), ("-3", -3),
                                         ("1e3", 1000)])
def test_parse_int_accepts_lossless_integers(text, value):
    assert csv_rows.parse_int(text) == value


@pytest.mark.parametrize("text", ["7.5", "twelve", "nan", "inf", "1_0", ""])
def test_parse_int_rejects_the_rest(text):
    with pytest.raises(ValueError):
        csv_rows.parse_int(text)


def test_fast_and_slow_column_paths_agree():
    cells = ["1", "", "8.0", "17031081000.0", "-2"]
    values, bad = csv_rows.typed_columns({"x": cells}, {"x": csv_rows.INT})
    assert bad == {} and values["x"].to_pylist() == [1, None, 8, 17031081000, -2]
    values, bad = csv_rows.typed_columns({"x": cells + ["7.5"]}, {"x": csv_rows.INT})
    assert [(row, error.reason) for row, error in bad.items()] == [(5, "not_an_integer")]
    assert values["x"].to_pylist() == [1, None, 8, 17031081000, -2, None]


MIXED_HEADER = ["fare", "trip_start_hour", "company", "payment_type"]


def mixed_csv() -> str:
    """Plain lines first (Arrow's reader takes them), two with a bad cell, then a quoted field
    over two lines, a blank line and a short record (the careful path from there on)."""
    rows = [f"{i}.25,{i % 24},Co{i % 4},Cash" for i in range(12)]
    rows[4] = "twelve,4,Co0,Cash"  # line 6
    rows[7] = "8.5,7.5,Co3,Cash"  # line 9
    tail = ['9,1,"Multi\r\nLine",Cash', "", "1,2,3", '10.5,3,"Comma, Inc.",Cash']  # lines 14-15, 16, 17, 18
    return "\r\n".join([",".join(MIXED_HEADER)] + rows + tail) + "\r\n"


@pytest.mark.parametrize("batch_size", [4, 4096])
def test_plain_and_quoted_parts_of_a_file_give_lines_letters_and_rows(tmp_path, batch_size):
    source = tmp_path / "mixed.csv"
    source.write_bytes(mixed_csv().encode())
    out = tmp_path / "out"
    summary = taxi_csv_to_tfrecord.run(["--input", str(source), "--output_dir", str(out),
                                        "--batch_size", str(batch_size)])
    assert (summary["read"], summary["blank"], sum(summary["written"].values())) == (16, 1, 12)
    letters = [json.loads(line) for line in (out / "dead_letter" / "dead_letter-00000-of-00001.jsonl").open()]
    assert [(l["line"], l.get("column"), l["reason"], l["record"]) for l in letters] == [
        (6, "fare", "not_a_number", "twelve,4,Co0,Cash"),
        (9, "trip_start_hour", "not_an_integer", "8.5,7.5,Co3,Cash"),
        (17, None, "wrong_column_count", "1,2,3")]
    with open(source, newline="") as handle:
        records = [r for r in csv.reader(handle)][1:]
    good = [r for r in records if len(r) == 4 and r[0] != "twelve" and r[1] != "7.5"]
    assert sorted(example_row(r) for r in read_examples(out)) == sorted(expected_row(MIXED_HEADER, r) for r in good)
    assert ("company", b"Multi\r\nLine") in sum((example_row(r) for r in read_examples(out)), ())

def test_one_lossless_integral_rule_for_both_csv_paths():
    """A float names one integer below 2**53 only: from there on floats skip integers."""
    import numpy as np
    import pyarrow as pa

    from beam_jobs import csv_batches

    floats = np.array([8.0, -3.0, 7.5, 2.0**53 - 1, 2.0**53, np.inf, np.nan])
    assert csv_rows.lossless_integral(floats).tolist() == [True, True, False, True, False, False, False]
    values, bad = csv_rows.typed_columns({"x": ["9007199254740991.0", "9007199254740993"]}, {"x": csv_rows.INT})
    assert bad == {} and values["x"].to_pylist() == [2**53 - 1, 2**53 + 1]
    assert csv_batches.value_kind(pa.array(["9007199254740991.0"]))[0] == csv_batches.INT
    assert csv_batches.value_kind(pa.array(["9007199254740993"]))[0] == csv_batches.INT


def ingest_outputs(source, out, batch_size, *extra):
    """(summary counts, dead letters, every output file's bytes) of one ingest run."""
    summary = taxi_csv_to_tfrecord.run(["--input", str(source), "--output_dir", str(out),
                                        "--batch_size", str(batch_size), *extra])
    files = {path.name: path.read_bytes() for path in sorted(out.glob("*.tfrecord"))}
    letters = (out / "dead_letter" / "dead_letter-00000-of-00001.jsonl").read_text()
    return (summary["read"], summary["blank"], summary["written"], summary["rejected"]), letters, files


def test_output_bytes_do_not_depend_on_the_batch_size(tmp_path):
    """Blank lines and an over-long cell in the plain part, quotes later: every batch size
    takes the two parsers at other places and must give the same counts, letters and bytes."""
    text = mixed_csv().replace("2.25,2,Co2,Cash", "2.25,2,Co2,Cash\r\n\r\n", 1)  # two blank lines after line 4
    text = text.replace("10.25,10,Co2,Cash", "10.25,10," + "C" * 200_000 + ",Cash", 1)  # over csv's field limit
    source = tmp_path / "mixed.csv"
    source.write_bytes(text.encode())
    runs = [ingest_outputs(source, tmp_path / f"out{size}", size) for size in (1, 4, 4096)]
    counts, letters, files = runs[0]
    assert counts == (18, 3, counts[2], {"malformed_csv": 1, "not_a_number": 1, "not_an_integer": 1,
                                         "wrong_column_count": 1})
    assert sum(counts[2].values()) == 11
    assert [(l["line"], l["reason"]) for l in map(json.loads, letters.splitlines())] == [
        (8, "not_a_number"), (11, "not_an_integer"), (14, "malformed_csv"), (19, "wrong_column_count")]
    assert all(run == runs[0] for run in runs[1:])


def test_lone_cr_line_endings_are_lines(tmp_path):
    source = tmp_path / "old_mac.csv"
    source.write_bytes(b"1.5,3,Co1,Cash\r2.5,4,Co2,Cash\r\r3.5,x,Co3,Cash\r")
    out = tmp_path / "out"
    summary = taxi_csv_to_tfrecord.run(["--input", str(source), "--output_dir", str(out),
                                        "--column_names", ",".join(MIXED_HEADER)])
    assert (summary["read"], summary["blank"], sum(summary["written"].values())) == (4, 1, 2)
    letters = [json.loads(line) for line in (out / "dead_letter" / "dead_letter-00000-of-00001.jsonl").open()]
    assert [(l["line"], l["column"], l["reason"]) for l in letters] == [(4, "trip_start_hour", "not_an_integer")]

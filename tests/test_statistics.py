"""The statistics job: CSV typing, dead letters, splits of an ingest job, slices, on real data."""

import gzip
import json
import logging

import apache_beam as beam
import pandas as pd
import pyarrow as pa
import pytest
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.flink_runner import FlinkRunner
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from tensorflow_metadata.proto.v0 import statistics_pb2

from beam_jobs import csv_batches, line_ranges, options, statistics, stats_io
from tests.conftest import QUICKDRAW, TAXI

TAXI_COLUMNS = 18
BEAMS_FANOUT = beam.CombinePerKey.__dict__["with_hot_key_fanout"]


def _feature(stats, name):
    dataset = stats_io.default_split(stats).datasets[0]
    return next(f for f in dataset.features if f.path.step[-1] == name)


def test_value_kind_reads_integral_floats_as_int():
    assert csv_batches.value_kind(pa.array(["8", None, "17031081000.0", "-3.0"]))[0] == csv_batches.INT
    assert csv_batches.value_kind(pa.array(["8", "7.5", None])) == (csv_batches.FLOAT, 1)
    assert csv_batches.value_kind(pa.array([None, "8", "Cash"])) == (csv_batches.BYTES, 2)
    assert csv_batches.value_kind(pa.array([None, None], pa.string())) == (None, None)
    # Beyond 2**53 a float names no single integer: not an INT.
    assert csv_batches.value_kind(pa.array(["1e17"]))[0] == csv_batches.FLOAT


def test_to_list_array_keeps_missing_cells_null():
    column = csv_batches.to_list_array(pa.array(["8.0", None, "17031081000.0"]), csv_batches.INT)
    assert column.type == pa.large_list(pa.int64())
    assert column.to_pylist() == [[8], None, [17031081000]]
    floats = csv_batches.to_list_array(pa.array([None, "2.5"]), csv_batches.FLOAT)
    assert floats.to_pylist() == [None, [2.5]] and floats.type == pa.large_list(pa.float32())
    assert csv_batches.to_list_array(pa.array([None], pa.string()), None).type == pa.null()


def test_csv_to_record_batches_dead_letters_bad_rows_with_file_and_line(tmp_path):
    path = tmp_path / "f.csv"
    path.write_bytes(b"a,b\n1,x\n2\n\n3.0,y\n\xff,z\n")
    with test_pipeline.TestPipeline() as p:
        ranges = p | beam.Create(line_ranges.plan([str(path)]))
        result = ranges | csv_batches.CsvToRecordBatches(column_names=["a", "b"])
        rows = result.record_batches | beam.FlatMap(lambda rb: zip(*(c.to_pylist() for c in rb.columns)))
        # The assertions run when the with block exits.
        assert_that(rows, equal_to([([1], [b"x"]), ([3], [b"y"])]), label="Rows")
        letters = result.dead_letters | beam.Map(lambda d: (d["line"], d["reason"]))
        assert_that(letters, equal_to([(3, "wrong_field_count"), (6, "not_utf8")]), label="DeadLetters")


def test_line_ranges_cover_every_line_once_with_its_number(shared_data):
    path = str(TAXI / "data.csv")
    with open(path, "rb") as handle:
        expected = [(number, line.rstrip(b"\r\n")) for number, line in enumerate(handle, start=1)]
    ranges = line_ranges.plan([path], target_bytes=100_000)
    assert len(ranges) > 10 and ranges[0].start == 0 and ranges[-1].end is None
    assert all(a.end == b.start for a, b in zip(ranges, ranges[1:]))
    got = [(batch.first_line + i, line) for r in ranges for batch in line_ranges.iter_line_blocks(r, 500)
           for i, line in enumerate(batch.lines())]
    assert got == expected


def test_line_ranges_are_equal_across_chunks_and_lines_longer_than_a_range(tmp_path, monkeypatch):
    monkeypatch.setattr(line_ranges, "_CHUNK", 64)  # every read crosses lines, every cut crosses reads
    monkeypatch.setattr(line_ranges, "_MASK_BYTES", 7)  # and newlines are found 7 bytes at a time
    lines = [b"%d,%s" % (i, b"y" * (5000 if i == 40 else i % 13)) for i in range(400)]
    path = tmp_path / "long.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    size, target = path.stat().st_size, 1000
    ranges = line_ranges.plan([str(path)], target_bytes=target)
    got = [(batch.first_line + i, line) for r in ranges for batch in line_ranges.iter_line_blocks(r, 64)
           for i, line in enumerate(batch.lines())]
    assert got == list(enumerate(lines, start=1))
    # One cut per point k*size/parts, at the first newline after it; points inside the long
    # line (line 41) give one cut, after it.
    parts = -(-size // target)
    ends = [len(b"".join(line + b"\n" for line in lines[:n])) for n in range(1, len(lines) + 1)]
    expected_starts = sorted({next(end for end in ends if end > size * k // parts) for k in range(1, parts)} - {size})
    assert [r.start for r in ranges] == [0] + expected_starts


def test_line_ranges_keep_crlf_blank_lines_and_a_last_line_without_newline_apart(tmp_path, monkeypatch):
    monkeypatch.setattr(line_ranges, "_MASK_BYTES", 100)  # newlines found across many mask chunks
    content = b"a,b\r\n" + b"".join(b"%d,x\r\n" % i if i % 7 else b"\n" for i in range(3000)) + b"9,end"
    path = tmp_path / "mixed.csv"
    path.write_bytes(content)
    with open(path, "rb") as handle:
        expected = [(number, line.rstrip(b"\r\n")) for number, line in enumerate(handle, start=1)]
    ranges = line_ranges.plan([str(path)], target_bytes=1000)
    assert len(ranges) > 20
    blocks = [block for r in ranges for block in line_ranges.iter_line_blocks(r, 64)]
    got = [(block.first_line + i, line) for block in blocks for i, line in enumerate(block.lines())]
    assert got == expected
    # One range for the whole file, and a compressed file (read as its lines come): the same lines.
    whole = [block for block in line_ranges.iter_line_blocks(line_ranges.LineRange(str(path), 0, None, 1), 64)]
    (tmp_path / "mixed.csv.gz").write_bytes(gzip.compress(content))
    packed = list(line_ranges.iter_line_blocks(line_ranges.LineRange(str(tmp_path / "mixed.csv.gz"), 0, None, 1), 64))
    for found in (whole, packed):
        assert [(block.first_line + i, line) for block in found for i, line in enumerate(block.lines())] == expected
    assert not any(block.has_lone_cr() for block in blocks + whole)  # CRLF and a last line without one
    # Each block's bytes are its lines as in the file (CRs kept), joined by their newlines.
    with open(path, "rb") as handle:
        raw = handle.read().split(b"\n")
    for block in blocks:
        assert block.count == len(block.lines()) and 1 <= block.count <= 64
        assert bytes(block.data()) == b"\n".join(raw[block.first_line - 1:block.first_line - 1 + block.count])
    first = blocks[0].without_first_line()  # the header dropped, as the CSV passes do
    assert (first.first_line, first.count, first.lines()) == (2, 63, [line for _, line in expected[1:64]])


@pytest.fixture(scope="module")
def data2_stats(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("stats_data2")
    summary = statistics.run([f"--input={TAXI / 'data2.csv'}", f"--output_dir={out}"])
    return summary, out


def test_csv_statistics_match_pandas(data2_stats):
    summary, out = data2_stats
    frame = pd.read_csv(TAXI / "data2.csv")
    assert summary["examples"] == {"all": len(frame)}
    assert summary["lines_read"] == len(frame) + 1 and summary["rejected"] == {}
    stats, _ = stats_io.load_statistics(str(out))
    assert stats.datasets[0].num_examples == len(frame)
    for name in frame.columns:
        feature = _feature(stats, name)
        common = feature.num_stats.common_stats if feature.HasField("num_stats") else feature.string_stats.common_stats
        assert common.num_non_missing == frame[name].notna().sum(), name
    fare = _feature(stats, "fare").num_stats
    assert fare.mean == pytest.approx(frame.fare.mean(), rel=1e-6)
    assert fare.max == pytest.approx(frame.fare.max(), rel=1e-6)
    hours = _feature(stats, "trip_start_hour").num_stats
    assert (hours.min, hours.max) == (frame.trip_start_hour.min(), frame.trip_start_hour.max())
    payment = _feature(stats, "payment_type").string_stats
    assert payment.unique == frame.payment_type.nunique()
    assert {v.value: v.frequency for v in payment.top_values} == frame.payment_type.value_counts().to_dict()
    # data2.csv writes its integer columns as "8.0": they are still integers (pitfall 1).
    integral = [c for c in frame.columns if frame[c].dtype.kind == "f" and frame[c].notna().any()
                and (frame[c].dropna() % 1 == 0).all()]
    assert integral and all(summary["column_types"][c] == "INT" for c in integral)
    assert (out / "all" / "statistics.pbtxt").exists() and (out / "run_summary.json").exists()


def test_schema_guides_types_and_widening_names_file_and_line(tmp_path, caplog):
    data = tmp_path / "rides.csv"
    data.write_text("hour,fare\n8,1\n9.0,2\n7.5,3\n")
    schema = tmp_path / "schema.pbtxt"
    schema.write_text('feature { name: "hour" type: INT }\nfeature { name: "fare" type: FLOAT }\n')
    with caplog.at_level(logging.WARNING):
        summary = statistics.run([f"--input={data}", f"--schema={schema}", f"--output_dir={tmp_path / 'out'}"])
    assert summary["column_types"] == {"fare": "FLOAT", "hour": "FLOAT"}
    assert summary["type_warnings"] == [
        f"{data}:4 column 'hour': value '7.5' is not INT as the schema says; the column is read as FLOAT "
        "and validation will report it"]
    stats, _ = stats_io.load_statistics(str(tmp_path / "out"))
    # The schema says FLOAT for fare, whose values are all integral: TFDV still sees floats.
    assert _feature(stats, "fare").type == statistics_pb2.FeatureNameStatistics.FLOAT
    assert _feature(stats, "hour").type == statistics_pb2.FeatureNameStatistics.FLOAT


def test_bad_rows_are_dead_lettered_and_counted(tmp_path):
    data = tmp_path / "bad.csv"
    data.write_text("a,b\n1,x\n2\n\n3,y,extra\n4,z\n")
    out = tmp_path / "out"
    summary = statistics.run([f"--input={data}", f"--output_dir={out}"])
    assert summary["examples"] == {"all": 2}
    assert summary["rejected"] == {"wrong_field_count": 2} and summary["blank_lines"] == 1
    letters = [json.loads(line) for line in
               (out / "dead_letter" / "dead_letter-00000-of-00001.jsonl").read_text().splitlines()]
    assert [(l["line"], l["reason"], l["record"]) for l in letters] == [
        (3, "wrong_field_count", "2"), (5, "wrong_field_count", "3,y,extra")]


def test_slice_by_gives_one_dataset_per_value(data2_stats, tmp_path):
    frame = pd.read_csv(TAXI / "data2.csv")
    statistics.run([f"--input={TAXI / 'data2.csv'}", "--slice_by=payment_type", f"--output_dir={tmp_path}"])
    stats, _ = stats_io.load_statistics(str(tmp_path))
    sliced = {d.name: d.num_examples for d in stats.datasets}
    expected = {f"payment_type_{k}": v for k, v in frame.payment_type.value_counts().items()}
    assert sliced == dict(expected, **{"All Examples": len(frame)})


def test_usage_errors(tmp_path):
    with pytest.raises(options.UsageError, match="exactly one of"):
        statistics.run([f"--output_dir={tmp_path}"])
    with pytest.raises(options.UsageError, match="matches no file"):
        statistics.run([f"--input={tmp_path}/none*.csv", f"--output_dir={tmp_path}"])
    with pytest.raises(options.UsageError, match="holds no"):
        statistics.run([f"--examples_dir={tmp_path}", f"--output_dir={tmp_path}/o"])
    other = tmp_path / "other.csv"
    other.write_text("x,y\n1,2\n")
    with pytest.raises(options.UsageError, match="differs from"):
        statistics.run([f"--input={TAXI / 'data2.csv'}", f"--input={other}", f"--output_dir={tmp_path}/o"])


@pytest.fixture(scope="module")
def quickdraw_examples(shared_data, tmp_path_factory):
    from beam_jobs import quickdraw_to_tfrecord

    out = tmp_path_factory.mktemp("qd_examples")
    quickdraw_to_tfrecord.run([f"--input={QUICKDRAW / 'simplified'}/*", f"--output_dir={out}",
                               "--compression=gzip"])
    return out


def _count_records(paths):
    return sum(1 for _ in tf.data.TFRecordDataset([str(p) for p in paths], compression_type="GZIP"))


def test_examples_dir_gives_statistics_per_split(quickdraw_examples, tmp_path):
    summary = statistics.run([f"--examples_dir={quickdraw_examples}", f"--output_dir={tmp_path}"])
    for split in ("train", "eval", "test"):
        expected = _count_records(sorted(quickdraw_examples.glob(f"{split}-*.tfrecord.gz")))
        assert summary["examples"][split] == expected
        stats, _ = stats_io.load_statistics(str(tmp_path), (split,))
        assert stats.datasets[0].num_examples == expected
    classes = len((quickdraw_examples / "labels.txt").read_text().splitlines())
    train, _ = stats_io.load_statistics(str(tmp_path))
    label = _feature(train, "label").num_stats
    assert 0 <= label.min and label.max <= classes - 1
    pixels = _feature(train, "img_64").num_stats
    assert (pixels.min, pixels.max) == (0, 255)
    assert pixels.common_stats.min_num_values == pixels.common_stats.max_num_values == 64 * 64


def _parsed(tmp_path, lines):
    """(cells by column, as the typing pass gives them; dead letters of the first pass)."""
    kinds = {name: csv_batches.BYTES for name in "abc"}
    path = tmp_path / "f.csv"
    path.write_bytes(b"\n".join([b"a,b,c"] + lines) + b"\n")
    typing = csv_batches.ParseToRecordBatchFn(list("abc"), "test", batch_size=100)
    record_batches = list(typing.process(line_ranges.LineRange(str(path), 0, None, 1), kinds))
    first_pass = csv_batches.ParseCsvLinesFn(list("abc"), "test", batch_size=100)
    first_pass.setup()
    outputs = list(first_pass.process(line_ranges.LineRange(str(path), 0, None, 1)))
    letters = [o.value for o in outputs if getattr(o, "tag", None) == "dead_letters"]
    columns = {name: [None if cell is None else cell[0].decode() for cell in record_batches[0].column(i).to_pylist()]
               for i, name in enumerate("abc")}
    return columns, letters


def test_first_pass_adds_up_counts_and_kinds_over_the_batches_of_a_range(tmp_path):
    path = tmp_path / "f.csv"
    # Batches of 2 lines: [header, 1,x] [2,y, blank] [3.5,z, bad] [5,w, x,v].
    path.write_bytes(b"a,b\n1,x\n2,y\n\n3.5,z\n4,only,three\n5,w\nx,v\n")
    first_pass = csv_batches.ParseCsvLinesFn(["a", "b"], "test", batch_size=2)
    first_pass.setup()
    outputs = [(getattr(o, "tag", None), getattr(o, "value", o))
               for o in first_pass.process(line_ranges.LineRange(str(path), 0, None, 1))]
    assert [value for tag, value in outputs if tag == "counts"] == [
        {"read": 8, "header": 1, "blank": 1, "rejected.wrong_field_count": 1, "rows": 5}]
    assert [(letter["line"], letter["reason"]) for tag, letter in outputs if tag == "dead_letters"] == [
        (6, "wrong_field_count")]
    # One kinds dict for the range: the widest kind, then its earliest line (a: FLOAT at 5, BYTES at 8).
    assert [value for tag, value in outputs if tag is None] == [
        {"a": csv_batches.KindEvidence(csv_batches.BYTES, str(path), 8, "x"),
         "b": csv_batches.KindEvidence(csv_batches.BYTES, str(path), 2, "x")}]


def test_arrow_fast_path_and_line_by_line_path_agree(tmp_path):
    good = [b'1,"Checker Taxi, Inc.",x', b'2,"",', b'3,"say ""hi""",z', b"4,caf\xc3\xa9,"]
    fast, none = _parsed(tmp_path, good)
    assert none == [] and fast == {"a": ["1", "2", "3", "4"], "b": ["Checker Taxi, Inc.", None, 'say "hi"', "café"],
                                   "c": ["x", None, "z", None]}
    # One bad line sends the batch down the careful path: same rows, and the bad one dead-lettered.
    slow, letters = _parsed(tmp_path, good[:2] + [b"5,only two"] + good[2:])
    assert slow == fast
    assert [(l["line"], l["reason"]) for l in letters] == [(4, "wrong_field_count")]


def test_a_lone_cr_and_a_blank_line_in_one_block_go_line_by_line(tmp_path):
    # Arrow's reader would end a row at the lone CR and skip the blank line: the right row
    # count, with rows on the wrong lines. Line by line, line 2 is a dead letter (csv's reader
    # refuses a newline inside an unquoted field) and the blank line 3 is counted.
    columns, letters = _parsed(tmp_path, [b"1,x,y\r2,y,z", b"", b"3,w,v"])
    assert columns == {"a": ["3"], "b": ["w"], "c": ["v"]}
    assert [(letter["line"], letter["reason"]) for letter in letters] == [(2, "bad_csv")]


def test_same_input_gives_the_same_bytes(data2_stats, tmp_path):
    _, first = data2_stats
    statistics.run([f"--input={TAXI / 'data2.csv'}", f"--output_dir={tmp_path}"])
    for name in (stats_io.STATS_FILE, stats_io.STATS_TEXT_FILE):
        assert (tmp_path / "all" / name).read_bytes() == (first / "all" / name).read_bytes()


def test_a_csv_with_only_its_header_gives_zero_examples_not_an_error(tmp_path):
    (tmp_path / "empty.csv").write_text("a,b\n")
    summary = statistics.run([f"--input={tmp_path / 'empty.csv'}", f"--output_dir={tmp_path / 'out'}"])
    assert summary["examples"] == {"all": 0}
    assert (summary["lines_read"], summary["header_lines"], summary["rejected"]) == (1, 1, {})
    assert summary["column_types"] == {"a": "NULL", "b": "NULL"}


@pytest.mark.parametrize("runner, fanout", [
    ("DirectRunner", False), ("BundleBasedDirectRunner", False), ("FlinkRunner", True),
    (FlinkRunner(), True),  # a runner object with no --runner flag: the flag alone would say local
])
def test_tfdv_hot_key_fanout_is_kept_off_the_local_runner_only(shared_data, runner, fanout):
    # Built, not run: which transforms TFDV's GenerateStatistics holds for each runner.
    path = str(TAXI / "data.csv")
    source = statistics.Source("csv", {stats_io.ALL_SPLIT: [path]}, csv_batches.common_header([path]))
    if isinstance(runner, str):
        pipeline = beam.Pipeline(options=PipelineOptions([f"--runner={runner}"]))
    else:
        pipeline = beam.Pipeline(runner=runner, options=PipelineOptions())
    _ = pipeline | "InputsToStatistics" >> statistics.InputsToStatistics(source=source)
    names = [t.unique_name for t in pipeline.to_runner_api().components.transforms.values()]
    combines = [n for n in names if n.endswith("/RunCombinerStatsGenerators[0]")]
    fanned = [n for n in names if "RunCombinerStatsGenerators[0]/" in n and "PreCombineFn" in n]
    assert len(combines) == 1 and bool(fanned) is fanout
    assert beam.CombinePerKey.__dict__["with_hot_key_fanout"] is BEAMS_FANOUT  # Beam's own, after the build


def test_the_fanout_is_beams_again_when_building_fails():
    with pytest.raises(RuntimeError):
        with statistics.without_hot_key_fanout(True):
            assert beam.CombinePerKey(sum).with_hot_key_fanout(fanout=4).__class__ is beam.CombinePerKey
            raise RuntimeError("TFDV's expand failed")
    assert beam.CombinePerKey.__dict__["with_hot_key_fanout"] is BEAMS_FANOUT


@pytest.mark.parametrize("columns, expected", [(["a", "b"], 32768), ([f"c{i}" for i in range(1000)], 4194)])
def test_default_batch_sizes_by_input_kind_and_width(columns, expected):
    csv_source = statistics.Source("csv", {"all": ["x.csv"]}, columns)
    assert statistics.batch_size_for(csv_source, None) == expected  # at most 4M cells a batch
    assert statistics.batch_size_for(statistics.Source("tfrecord", {"all": ["x.tfrecord"]}), None) == 4096
    assert statistics.batch_size_for(csv_source, 100) == 100
    with pytest.raises(options.UsageError, match="at least 1"):
        statistics.batch_size_for(csv_source, 0)

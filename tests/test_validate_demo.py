"""The validation demo chain on generated spans: a span with an unseen category and drift fails the gate."""

import csv
import json

from beam_jobs import validation_demo


def _column(path, name):
    with open(path, newline="") as handle:
        return {row[name] for row in csv.DictReader(handle) if name in row and row[name] is not None}


def test_demo_chain_reports_the_unseen_category_and_drift(tmp_path, capsys):
    result = validation_demo.run([f"--work_dir={tmp_path}", "--rows=900"])
    span1, span2 = tmp_path / "csv" / "span1.csv", tmp_path / "csv" / "span2.csv"
    unseen = _column(span2, "payment_type") - _column(span1, "payment_type")
    assert unseen == {"Mobile"}
    assert result["exit_status"] == 1 and result["verdict"] == "anomalies found"
    rows = json.loads((tmp_path / "validate_span2" / "anomalies.json").read_text())
    payment = next(r for r in rows if r["feature"] == "payment_type" and r["split"] == "train")
    assert "ENUM_TYPE_UNEXPECTED_STRING_VALUES" in payment["kinds"]
    assert "Examples contain values missing from the schema: Mobile (" in payment["description"]
    # Span 2 is a year later: no timestamp of span 2 falls inside span 1's histogram.
    assert {r["split"] for r in rows if r["feature"] == "trip_start_timestamp"} == {"train", "eval", "test"}
    for report in (result["statistics_report"], result["validation_report"]):
        assert open(report).read().startswith("<!DOCTYPE html>")
    assert (tmp_path / "inferred_schema.pbtxt").exists()
    printed = capsys.readouterr().out
    assert f"Validation report (span 2):  {result['validation_report']}" in printed
    assert "validate would exit 1" in printed

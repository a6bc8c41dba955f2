"""The validate gate on real taxi data: exact anomalies, exit statuses, written files."""

import json

import pandas as pd
import pytest
import tensorflow_data_validation as tfdv

from beam_jobs import infer_schema, options, statistics, validate
from tests.conftest import TAXI


def _exit_status(argv) -> int:
    """What `python -m beam_jobs.validate ARGV` exits with, without a new interpreter."""
    with pytest.raises(SystemExit) as raised:
        options.run_main(lambda: validate.main(argv))
    return raised.value.code


@pytest.fixture(scope="module")
def data2_schema(shared_data, tmp_path_factory):
    """The schema TFDV infers from data2.csv, through our two jobs."""
    root = tmp_path_factory.mktemp("data2_schema")
    statistics.run([f"--input={TAXI / 'data2.csv'}", f"--output_dir={root / 'stats'}"])
    infer_schema.run([f"--statistics={root / 'stats'}", f"--output={root / 'schema.pbtxt'}"])
    return root / "schema.pbtxt"


def _expected_anomalies(new: pd.DataFrame, reference: pd.DataFrame) -> dict:
    """Computed with pandas: string values the reference never had, and lost presence."""
    expected = {}
    for column in ("payment_type", "company"):
        unseen = set(new[column].dropna()) - set(reference[column].dropna())
        if unseen:
            expected[column] = ("Unexpected string values", unseen)
    for column in reference.columns:
        if reference[column].notna().all() and new[column].isna().any():
            # The inferred shape and min_fraction 1.0 both break: TFDV says "Multiple errors".
            expected[column] = ("Multiple errors", expected.get(column, ("", set()))[1])
    return expected


def test_schema_from_data2_flags_data_csv_unexpected_strings(data2_schema, tmp_path):
    new, reference = pd.read_csv(TAXI / "data.csv"), pd.read_csv(TAXI / "data2.csv")
    expected = _expected_anomalies(new, reference)
    assert expected["payment_type"][1] == {"Prcard", "Dispute"}  # as the TFX talks show
    assert len(expected["company"][1]) == 33

    out = tmp_path / "v"
    assert _exit_status([f"--input={TAXI / 'data.csv'}", f"--schema={data2_schema}", f"--output_dir={out}"]) == 1
    rows = json.loads((out / "anomalies.json").read_text())
    assert {r["feature"]: r["short_description"] for r in rows} == {k: v[0] for k, v in expected.items()}
    for row in rows:
        assert row["severity"] == "ERROR" and row["split"] == "all"
        for value in expected[row["feature"]][1]:
            assert f"{value} (" in row["description"], (row["feature"], value)
    presence = [r for r in rows if r["short_description"] == "Multiple errors"]
    assert presence and all("FEATURE_TYPE_LOW_FRACTION_PRESENT" in r["kinds"] for r in presence)
    anomalies = tfdv.load_anomalies_text(str(out / "all" / "anomalies.pbtxt"))
    assert sorted(anomalies.anomaly_info) == sorted(expected)
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["anomalies"] == len(expected) and summary["verdict"] == "anomalies found"


def test_data2_against_its_own_schema_passes(data2_schema, tmp_path, capsys):
    out = tmp_path / "v"
    assert _exit_status([f"--input={TAXI / 'data2.csv'}", f"--schema={data2_schema}", f"--output_dir={out}"]) == 0
    assert json.loads((out / "anomalies.json").read_text()) == []
    assert "validate: no anomalies (0)" in capsys.readouterr().out


def test_summary_table_on_stdout_names_each_anomaly(data2_schema, tmp_path, capsys):
    _exit_status([f"--input={TAXI / 'data.csv'}", f"--schema={data2_schema}", f"--output_dir={tmp_path}"])
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["split", "feature", "severity", "anomaly"]
    assert "all    payment_type          ERROR    Unexpected string values" in printed
    assert printed[-1] == f"validate: anomalies found (5) in {tmp_path}"


def test_unreadable_rows_fail_the_gate(data2_schema, tmp_path):
    data = tmp_path / "short.csv"
    lines = (TAXI / "data2.csv").read_text().splitlines()
    data.write_text("\n".join(lines[:50] + ["1,2,3"] + lines[50:]) + "\n")
    out = tmp_path / "v"
    assert _exit_status([f"--input={data}", f"--schema={data2_schema}", f"--output_dir={out}"]) == 1
    rows = json.loads((out / "anomalies.json").read_text())
    assert [(r["feature"], r["kinds"]) for r in rows] == [("(rows)", ["REJECTED_ROWS"])]
    assert "1 CSV row(s) could not be read (wrong_field_count 1)" in rows[0]["description"]


def test_bad_usage_and_unreadable_input_exit_2(data2_schema, tmp_path):
    assert _exit_status([f"--input={TAXI / 'data2.csv'}", f"--output_dir={tmp_path}"]) == 2
    assert _exit_status([f"--input={tmp_path}/missing*.csv", f"--schema={data2_schema}",
                         f"--output_dir={tmp_path}"]) == 2
    assert _exit_status([f"--input={TAXI / 'data2.csv'}", f"--schema={tmp_path}/none.pbtxt",
                         f"--output_dir={tmp_path}"]) == 2
    broken = tmp_path / "broken.pbtxt"
    broken.write_text("feature { name: ")
    assert _exit_status([f"--input={TAXI / 'data2.csv'}", f"--schema={broken}", f"--output_dir={tmp_path}"]) == 2
    assert _exit_status([f"--input={TAXI / 'data2.csv'}", f"--schema={data2_schema}", f"--output_dir={tmp_path}",
                         f"--baseline_statistics={tmp_path}/nothing"]) == 2
    assert not (tmp_path / "run_summary.json").exists()

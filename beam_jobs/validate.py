"""Validates new data against a schema with TFDV, with drift and skew checks: a pipeline gate.

Computes statistics of the new data (as `beam_jobs.statistics` does, same inputs), then
`tfdv.validate_statistics` per split against `--schema`, in `--environment` (TRAINING or
SERVING), with drift against `--baseline_statistics` (a previous span) and skew against
`--serving_statistics` when given (a statistics file or a statistics job's directory; the
same split is used when it has one, else train, else all). Writes

    OUT/<split>/statistics.pb[txt]   statistics of the new data
    OUT/<split>/anomalies.pbtxt      TFDV Anomalies proto (tfdv.load_anomalies_text)
    OUT/anomalies.json               one row per anomaly: split, feature, severity,
                                     short_description, description, kinds
    OUT/drift_skew.json              per feature: drift/skew measurements and thresholds
    OUT/run_summary.json             counts and the verdict; written last

and prints a summary table on stdout. CSV rows the reader had to reject count as an
anomaly too: a gate must not pass data it could not read.

Exit status: 0 = no anomalies, 1 = anomalies found, 2 = bad usage, unreadable input or a
failed run (anything that is not a verdict).

DirectRunner (default):
    python -m beam_jobs.validate --input data/taxi/data.csv --schema schemas/taxi/schema.pbtxt \\
        --environment TRAINING --baseline_statistics out/stats_span1 --output_dir out/validate \\
        --report out/validate/report.html

Two local worker processes / Flink / Dataflow: the same flags as `beam_jobs.statistics`.
"""

import argparse
import json
import logging
import sys
from typing import Dict, List

import tensorflow_data_validation as tfdv
from apache_beam.io.filesystems import FileSystems
from tensorflow_metadata.proto.v0 import anomalies_pb2

from beam_jobs import options, outputs, report, statistics, stats_io

_JOB = "validate"
ANOMALIES_TEXT = "anomalies.pbtxt"
ANOMALIES_JSON = "anomalies.json"
DRIFT_SKEW_JSON = "drift_skew.json"
EXIT_OK, EXIT_ANOMALIES, EXIT_USAGE = 0, 1, 2
_SEVERITY = {anomalies_pb2.AnomalyInfo.ERROR: "ERROR", anomalies_pb2.AnomalyInfo.WARNING: "WARNING",
             anomalies_pb2.AnomalyInfo.UNKNOWN: "UNKNOWN"}


def anomaly_rows(split: str, anomalies: anomalies_pb2.Anomalies) -> List[dict]:
    """One JSON-ready row per anomalous feature (and one for dataset-level anomalies)."""
    rows = []
    for feature, info in sorted(anomalies.anomaly_info.items()):
        rows.append(_row(split, feature, info))
    if anomalies.HasField("dataset_anomaly_info"):
        rows.append(_row(split, "(dataset)", anomalies.dataset_anomaly_info))
    return rows


def _row(split: str, feature: str, info) -> dict:
    return {
        "split": split,
        "feature": feature,
        "severity": _SEVERITY.get(info.severity, "UNKNOWN"),
        "short_description": info.short_description,
        "description": info.description,
        "kinds": [anomalies_pb2.AnomalyInfo.Type.Name(reason.type) for reason in info.reason],
    }


def drift_skew_rows(split: str, anomalies: anomalies_pb2.Anomalies) -> List[dict]:
    """Per feature, every drift and skew figure TFDV computed, with its threshold."""
    def measures(items):
        return [{"type": anomalies_pb2.DriftSkewInfo.Measurement.Type.Name(m.type),
                 "value": m.value, "threshold": m.threshold} for m in items]

    rows = []
    for info in anomalies.drift_skew_info:
        rows.append({"split": split, "feature": ".".join(info.path.step),
                     "drift": measures(info.drift_measurements), "skew": measures(info.skew_measurements)})
    return sorted(rows, key=lambda row: row["feature"])


def rejected_rows_anomaly(split: str, rejected: Dict[str, int]) -> List[dict]:
    if not rejected:
        return []
    total = sum(rejected.values())
    detail = ", ".join(f"{reason} {n}" for reason, n in sorted(rejected.items()))
    return [{"split": split, "feature": "(rows)", "severity": "ERROR",
             "short_description": "Unreadable rows",
             "description": f"{total} CSV row(s) could not be read ({detail}); see dead_letter/.",
             "kinds": ["REJECTED_ROWS"]}]


def summary_table(rows: List[dict], drift_skew: List[dict]) -> str:
    """A plain-text table a person reads in a CI log."""
    lines = []
    if rows:
        width = max(len(r["feature"]) for r in rows)
        lines.append(f"{'split':6} {'feature':{width}} {'severity':8} anomaly")
        for r in rows:
            lines.append(f"{r['split']:6} {r['feature']:{width}} {r['severity']:8} {r['short_description']}")
    figures = [(r, kind, m) for r in drift_skew for kind in ("drift", "skew") for m in r[kind]]
    if figures:
        width = max(len(r["feature"]) for r, _, _ in figures)
        lines.append("")
        lines.append(f"{'split':6} {'feature':{width}} {'check':5} {'measure':28} {'value':>8} {'threshold':>9}")
        for r, kind, m in figures:
            flag = "  EXCEEDED" if m["value"] > m["threshold"] else ""
            lines.append(f"{r['split']:6} {r['feature']:{width}} {kind:5} {m['type']:28} "
                         f"{m['value']:8.4f} {m['threshold']:9.4f}{flag}")
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    statistics.add_data_args(parser)
    parser.add_argument("--baseline_statistics", help="Statistics of a previous span: drift is checked against them.")
    parser.add_argument("--serving_statistics", help="Statistics of serving data: skew is checked against them.")
    parser.add_argument("--environment", help="Schema environment to validate in, e.g. TRAINING or SERVING.")
    args, pipeline_options = options.parse(parser, argv)
    if not args.schema:
        parser.error("--schema is required")
    return args, pipeline_options


def run(argv=None) -> dict:
    """Validates; returns the run summary, whose `anomalies` count decides the exit status."""
    args, pipeline_options = parse_args(argv)
    source, schema = statistics.load_source_and_schema(args)
    environments = set(schema.default_environment)
    if args.environment and environments and args.environment not in environments:
        raise options.UsageError(f"--environment {args.environment!r} is not in the schema's "
                                 f"default_environment {sorted(environments)}")
    baselines = {split: stats_io.optional_statistics(args.baseline_statistics, split) for split in source.splits}
    servings = {split: stats_io.optional_statistics(args.serving_statistics, split) for split in source.splits}
    owned = statistics.owned_globs(source) + [f"{split}/{ANOMALIES_TEXT}" for split in source.splits] + [
        ANOMALIES_JSON, DRIFT_SKEW_JSON]
    with outputs.StagedOutput(args.output_dir, owned) as staged:
        computed = statistics.compute(source, schema, None, args.batch_size, pipeline_options, staged)
        rows, drift_skew, per_split = [], [], {}
        for split, stats in sorted(computed["statistics"].items()):
            anomalies = tfdv.validate_statistics(
                stats_io.default_split(stats), schema, environment=args.environment,
                previous_statistics=baselines[split], serving_statistics=servings[split])
            tfdv.write_anomalies_text(anomalies, FileSystems.join(staged.staging_dir, split, ANOMALIES_TEXT))
            per_split[split] = anomalies
            rows += anomaly_rows(split, anomalies)
            drift_skew += drift_skew_rows(split, anomalies)
        rows += rejected_rows_anomaly(stats_io.ALL_SPLIT, computed["summary"].get("rejected"))
        _write_json(staged.staged_path(ANOMALIES_JSON), rows)
        _write_json(staged.staged_path(DRIFT_SKEW_JSON), drift_skew)
        summary = dict(computed["summary"], anomalies=len(rows),
                       anomalous_features=sorted({r["feature"] for r in rows}),
                       verdict="anomalies found" if rows else "no anomalies",
                       options=statistics.recorded_options(args))
        staged.publish(summary)
    sys.stdout.write(summary_table(rows, drift_skew) + "\n")
    sys.stdout.write(f"validate: {summary['verdict']} ({len(rows)}) in {args.output_dir}\n")
    if args.report:
        report.write_report(args.report, report.ReportInput(
            title=f"Validation: {', '.join(options.comma_list(args.input)) or args.examples_dir}",
            statistics=computed["statistics"], examples_dir=args.examples_dir, anomalies=rows,
            drift_skew=drift_skew, schema=schema))
        logging.info("%s: report written to %s", _JOB, args.report)
    return summary


def _write_json(path: str, value) -> None:
    with FileSystems.create(path) as handle:
        handle.write(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).encode() + b"\n")


def main(argv=None) -> None:
    """The gate: exit 0 when clean, 1 on anomalies, 2 when there is no verdict."""
    try:
        summary = run(argv)
    except (options.UsageError, SystemExit):
        raise
    except Exception:  # noqa: BLE001 - any failure without a verdict must not read as "anomalies"
        logging.exception("%s: the run failed before a verdict; exit status 2", _JOB)
        raise SystemExit(EXIT_USAGE) from None
    raise SystemExit(EXIT_ANOMALIES if summary["anomalies"] else EXIT_OK)


if __name__ == "__main__":
    options.run_main(main)

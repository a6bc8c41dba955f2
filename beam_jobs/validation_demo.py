"""The validation half of the demo: statistics -> schema -> validate, ending with the gate's verdict.

    python -m beam_jobs.validation_demo --work_dir /tmp/validation_demo

Standalone it generates the two taxi spans (`synthetic_taxi`: span 2 is a year later, fares
15% higher, and has a payment type span 1 never had) and ingests them; `demo.py` calls
`run_validation_demo` with the Examples it already made. Span 1's statistics are the
baseline; span 2 is validated against the curated `schemas/taxi/schema.pbtxt` with drift
against span 1, and the HTML report and the verdict are printed.
"""

import argparse
import os
import sys
from typing import Optional, Sequence

import schemas
from beam_jobs import infer_schema, options, statistics, synthetic_taxi, taxi_csv_to_tfrecord, validate


def run_validation_demo(work_dir: str, taxi_examples: str, taxi_examples_span2: str,
                        quickdraw_examples: Optional[str] = None, beam_args: Sequence[str] = ()) -> dict:
    """Runs the chain into work_dir; returns the report paths and the gate's verdict."""
    beam_args = list(beam_args)
    path = {name: os.path.join(work_dir, name) for name in ("stats_span1", "validate_span2", "quickdraw_stats")}
    statistics.run(["--examples_dir", taxi_examples, "--output_dir", path["stats_span1"],
                    "--report", os.path.join(path["stats_span1"], "report.html"), *beam_args])
    # The draft a person curates into schemas/taxi/schema.pbtxt (the demo validates with the curated one).
    infer_schema.run(["--statistics", path["stats_span1"], "--output", os.path.join(work_dir, "inferred_schema.pbtxt")])
    report = os.path.join(path["validate_span2"], "report.html")
    summary = validate.run(["--examples_dir", taxi_examples_span2, "--schema", schemas.path("taxi"), "--environment", "TRAINING",
                            "--baseline_statistics", path["stats_span1"], "--output_dir", path["validate_span2"],
                            "--report", report, *beam_args])
    result = {"statistics_report": os.path.join(path["stats_span1"], "report.html"), "validation_report": report,
              "verdict": summary["verdict"], "anomalies": summary["anomalies"],
              "anomalous_features": summary["anomalous_features"],
              "exit_status": validate.EXIT_ANOMALIES if summary["anomalies"] else validate.EXIT_OK}
    if quickdraw_examples:
        result["quickdraw_report"] = os.path.join(path["quickdraw_stats"], "report.html")
        statistics.run(["--examples_dir", quickdraw_examples, "--output_dir", path["quickdraw_stats"],
                        "--report", result["quickdraw_report"], *beam_args])
    return result


def print_verdict(result: dict) -> None:
    out = sys.stdout
    out.write(f"\nStatistics report (span 1):  {result['statistics_report']}\n")
    if "quickdraw_report" in result:
        out.write(f"QuickDraw statistics report: {result['quickdraw_report']}\n")
    out.write(f"Validation report (span 2):  {result['validation_report']}\n")
    out.write(f"Gate verdict: {result['verdict']} ({result['anomalies']}: "
              f"{', '.join(result['anomalous_features']) or 'none'}); "
              f"validate would exit {result['exit_status']}\n")


def run(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work_dir", required=True)
    parser.add_argument("--rows", type=int, default=3000, help="Rows of span 1 (span 2 has a third).")
    args, beam_args = parser.parse_known_args(argv)
    span1, span2 = synthetic_taxi.write_spans(os.path.join(args.work_dir, "csv"), rows=args.rows)
    examples = [os.path.join(args.work_dir, name) for name in ("examples", "examples_span2")]
    for span, out in zip((span1, span2), examples):
        taxi_csv_to_tfrecord.run(["--input", span, "--output_dir", out, *beam_args])
    result = run_validation_demo(args.work_dir, examples[0], examples[1], beam_args=beam_args)
    print_verdict(result)
    return result


if __name__ == "__main__":
    options.run_main(run)

"""Infers a schema (.pbtxt) from training statistics with `tfdv.infer_schema`.

`--statistics` is a statistics file (binary, TFRecord or text) or the output directory of
`beam_jobs.statistics`, in which case its `train` split is used, or `all` when the input
was not split. The schema is a first draft: curate it (domains, presence, environments,
drift and skew comparators) and review it like code, as `schemas/` shows.

No pipeline runs here (the statistics are one small proto), so there are no runner flags:
    python -m beam_jobs.infer_schema --statistics out/stats --output out/schema.pbtxt
"""

import argparse
import logging

import tensorflow_data_validation as tfdv
from google.protobuf import text_format

from beam_jobs import options, stats_io

_JOB = "infer_schema"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--statistics", required=True,
                        help="Statistics file, or a statistics job's output directory (train or all split).")
    parser.add_argument("--output", required=True, help="Where to write the schema .pbtxt.")
    parser.add_argument("--max_string_domain_size", type=int, default=100,
                        help="String features with more distinct values get no domain (default 100).")
    parser.add_argument("--no_infer_feature_shape", dest="infer_feature_shape", action="store_false",
                        help="Do not give always-single-valued features a fixed shape.")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.error(f"unrecognised arguments: {' '.join(unknown)} (this job runs no pipeline)")
    if args.max_string_domain_size < 1:
        parser.error("--max_string_domain_size must be at least 1")
    return args


def run(argv=None) -> dict:
    """Infers and writes the schema; returns a summary of what it holds."""
    args = parse_args(argv)
    statistics, source = stats_io.load_statistics(args.statistics)
    statistics = stats_io.default_split(statistics)
    schema = tfdv.infer_schema(statistics, infer_feature_shape=args.infer_feature_shape,
                               max_string_domain_size=args.max_string_domain_size)
    stats_io.write_atomically(args.output, text_format.MessageToString(schema).encode("utf-8"))
    summary = {
        "statistics": source,
        "output": args.output,
        "features": len(schema.feature),
        "string_domains": {d.name: len(d.value) for d in schema.string_domain},
    }
    logging.info("%s: %d features from %s (string domains: %s) written to %s", _JOB, summary["features"],
                 source, summary["string_domains"] or "none", args.output)
    return summary


if __name__ == "__main__":
    options.run_main(run)

"""Benchmarks: `python -m benchmarks.<name>`; each prints its figures and, last, one JSON object."""

import argparse


def add_repeats_arg(parser: argparse.ArgumentParser) -> None:
    """`--repeats N` (default 2, at least 1): rounds of every variant, for best_of."""
    parser.add_argument("--repeats", type=_at_least_one, default=2,
                        help="Rounds of every variant, one after the other; each variant's best time counts.")


def _at_least_one(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return count


def best_of(times: dict) -> dict:
    """{variant: its shortest time} of {variant: [times over rounds]}: the machine's other load
    only ever adds time, and it hurts a two-worker run, which needs both cores, more than a
    one-core run."""
    return {variant: min(values) for variant, values in times.items()}

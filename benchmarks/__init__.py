"""Benchmarks: `python -m benchmarks.<name>`; each prints its figures and, last, one JSON object."""


def best_of(times: dict) -> dict:
    """{variant: its shortest time} of {variant: [times over rounds]}: the machine's other load
    only ever adds time, and it hurts a two-worker run, which needs both cores, more than a
    one-core run."""
    return {variant: min(values) for variant, values in times.items()}

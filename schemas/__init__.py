"""Curated schemas, shipped inside the package so installed jobs and Dataflow workers find them.

    schemas.path("taxi")  ->  .../schemas/taxi/schema.pbtxt
"""

import os

_HERE = os.path.dirname(os.path.abspath(__file__))


def path(dataset: str) -> str:
    """The curated schema of `dataset` ("taxi", "quickdraw")."""
    found = os.path.join(_HERE, dataset, "schema.pbtxt")
    if not os.path.exists(found):
        known = sorted(d for d in os.listdir(_HERE) if os.path.isdir(os.path.join(_HERE, d)) and not d.startswith("_"))
        raise FileNotFoundError(f"no curated schema for {dataset!r}; known: {', '.join(known)}")
    return found

"""Deterministic hash splits and shards, the recipe of TFX's ExampleGen partition.

The same key lands in the same split and shard on every run and every runner.
"""

import hashlib
from typing import Sequence, Tuple

SPLIT_NAMES = ("train", "eval", "test")
_BUCKETS = 10_000


def parse_ratios(text: str) -> Tuple[float, float, float]:
    """Parses `80,10,10` (weights of train,eval,test) into fractions that sum to 1."""
    try:
        weights = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"split ratios must be numbers like 80,10,10, got {text!r}") from None
    if len(weights) != len(SPLIT_NAMES) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"split ratios need three non-negative weights with a positive sum, got {text!r}")
    total = sum(weights)
    return tuple(w / total for w in weights)


def key_hash(key: bytes, salt: bytes = b"") -> int:
    """A stable 64-bit hash of a record key (sha256, independent of Python's hash seed)."""
    return int.from_bytes(hashlib.sha256(salt + key).digest()[:8], "big")


def split_index(key: bytes, ratios: Sequence[float]) -> int:
    """Index into SPLIT_NAMES for `key`, by cumulative ratio over 10,000 hash buckets."""
    bucket = key_hash(key, b"split:") % _BUCKETS
    boundary = 0.0
    for index, ratio in enumerate(ratios):
        boundary += ratio * _BUCKETS
        if bucket < round(boundary):
            return index
    return max(i for i, r in enumerate(ratios) if r > 0)


def shard_index(key: bytes, num_shards: int) -> int:
    return key_hash(key, b"shard:") % num_shards

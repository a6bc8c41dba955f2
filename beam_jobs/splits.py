"""Deterministic hash splits and shards, the recipe of TFX's ExampleGen partition.

The same key lands in the same split and shard on every run and every runner.
"""

import hashlib
from typing import List, Sequence, Tuple

import numpy as np

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


def key_hashes(keys: Sequence[bytes], salt: bytes = b"") -> np.ndarray:
    """`key_hash` of every key, as uint64 (one pass, no Python int per key)."""
    digests = b"".join([hashlib.sha256(salt + key).digest()[:8] for key in keys])
    return np.frombuffer(digests, dtype=">u8").astype(np.uint64)


def split_indices(keys: Sequence[bytes], ratios: Sequence[float]) -> np.ndarray:
    """Index into SPLIT_NAMES per key, by cumulative ratio over 10,000 hash buckets."""
    buckets = key_hashes(keys, b"split:") % np.uint64(_BUCKETS)
    bounds, boundary = [], 0.0
    for ratio in ratios:  # Summed and rounded step by step: the documented rule, to the last bit.
        boundary += ratio * _BUCKETS
        bounds.append(round(boundary))
    index = np.searchsorted(np.array(bounds, dtype=np.uint64), buckets, side="right")
    # Rounding may leave the last buckets past every bound: they go to the last used split.
    last = max(i for i, r in enumerate(ratios) if r > 0)
    return np.minimum(index, last).astype(np.int8)


def shard_keys(num_shards: int) -> List[Tuple[str, int]]:
    """Every output file's (split, shard), numbered as `shard_key_indices` numbers them."""
    return [(split, shard) for split in SPLIT_NAMES for shard in range(num_shards)]


def shard_key_indices(split_of, shard_of, num_shards: int) -> np.ndarray:
    """Per row, the index of its (split, shard) in `shard_keys(num_shards)`."""
    return np.asarray(split_of, np.int64) * num_shards + shard_of


def shard_indices(keys: Sequence[bytes], num_shards: int) -> np.ndarray:
    if num_shards == 1:  # no hashing needed
        return np.zeros(len(keys), dtype=np.int32)
    return (key_hashes(keys, b"shard:") % np.uint64(num_shards)).astype(np.int32)

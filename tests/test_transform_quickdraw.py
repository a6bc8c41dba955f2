"""analyze_and_transform --dataset quickdraw on four real categories; expectations from numpy."""

import collections
import os

import numpy as np
import pytest
import tensorflow as tf

from beam_jobs import analyze_and_transform, quickdraw_to_tfrecord
from tests import taxi_runs
from tests.conftest import QUICKDRAW
from transforms.quickdraw import features, preprocessing

CATEGORIES = ("cat", "dog", "apple", "car")
SIZE = 28


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("quickdraw")
    inputs = ",".join(str(QUICKDRAW / "simplified" / f"{name}.ndjson") for name in CATEGORIES)
    quickdraw_to_tfrecord.run(["--input", inputs, "--output_dir", str(root / "examples"), "--image_size", str(SIZE)])
    analyze_and_transform.run(["--dataset", "quickdraw", "--examples_dir", str(root / "examples"),
                               "--output_dir", str(root / "transformed")])
    analyze_and_transform.run(["--dataset", "quickdraw", "--examples_dir", str(root / "examples"),
                               "--output_dir", str(root / "by_word"),
                               "--preprocessing_fn", "transforms.quickdraw.preprocessing:preprocessing_fn_word_vocab"])
    return {name: str(root / name) for name in ("examples", "transformed", "by_word")}


def parsed_pairs(dirs, transformed, split):
    spec = features.feature_spec(SIZE)
    out = []
    for raw, xf in taxi_runs.raw_and_transformed(dirs["examples"], dirs[transformed], split):
        raw = {k: v.numpy() for k, v in tf.io.parse_single_example(raw, spec).items() if k != features.INK_KEY}
        out.append((raw, tf.train.Example.FromString(xf).features.feature))
    return out


def test_image_scaled_to_unit_range_and_label_kept(dirs):
    for split in ("train", "eval", "test"):
        for raw, xf in parsed_pairs(dirs, "transformed", split):
            expected = raw[features.image_key(SIZE)].astype(np.float32) / np.float32(255)
            got = np.array(xf[preprocessing.IMAGE_KEY].float_list.value, dtype=np.float32)
            # TF's graph may divide as a multiply by 1/255: within one float32 ulp.
            np.testing.assert_allclose(got, expected, rtol=2e-7, atol=0)
            assert 0.0 <= got.min() and got.max() <= 1.0
            assert xf[preprocessing.LABEL_KEY].int64_list.value == [raw[features.LABEL_KEY]]
            assert xf[preprocessing.RECOGNIZED_KEY].int64_list.value == [raw[features.RECOGNIZED_KEY]]


def test_countrycode_vocabulary_from_train_by_frequency(dirs):
    pairs = parsed_pairs(dirs, "transformed", "train")
    counts = collections.Counter(raw[features.COUNTRYCODE_KEY] or preprocessing.MISSING_COUNTRYCODE.encode()
                                 for raw, _ in pairs)
    path = os.path.join(dirs["transformed"], "transform_fn", "assets", preprocessing.COUNTRYCODE_VOCAB)
    vocab = open(path, "rb").read().splitlines()
    assert sorted(vocab) == sorted(counts)
    assert [counts[code] for code in vocab] == sorted(counts.values(), reverse=True)
    for raw, xf in pairs:
        code = raw[features.COUNTRYCODE_KEY] or preprocessing.MISSING_COUNTRYCODE.encode()
        assert xf[preprocessing.COUNTRYCODE_KEY].int64_list.value == [vocab.index(code)]


def test_word_vocabulary_label_variant(dirs):
    pairs = parsed_pairs(dirs, "by_word", "train")
    path = os.path.join(dirs["by_word"], "transform_fn", "assets", preprocessing.WORD_VOCAB)
    vocab = open(path, "rb").read().splitlines()
    assert sorted(vocab) == sorted(name.encode() for name in CATEGORIES)
    for raw, xf in pairs:
        assert xf[preprocessing.LABEL_KEY].int64_list.value == [vocab.index(raw[features.WORD_KEY])]

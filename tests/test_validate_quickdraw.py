"""QuickDraw: the real Examples validate clean against schemas/quickdraw; broken ones do not."""

import json

import pytest
import tensorflow as tf

from beam_jobs import quickdraw_to_tfrecord
from tests.conftest import QUICKDRAW, REPO
from tests.test_validate import _exit_status

QUICKDRAW_SCHEMA = REPO / "schemas" / "quickdraw" / "schema.pbtxt"


@pytest.fixture(scope="module")
def examples_dir(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("qd")
    quickdraw_to_tfrecord.run([f"--input={QUICKDRAW / 'simplified'}/*", f"--output_dir={out}"])
    return out


def test_real_quickdraw_examples_validate_clean_with_report(examples_dir, tmp_path):
    report = tmp_path / "report.html"
    assert _exit_status([f"--examples_dir={examples_dir}", f"--schema={QUICKDRAW_SCHEMA}", "--environment=TRAINING",
                         f"--output_dir={tmp_path / 'v'}", f"--report={report}"]) == 0
    summary = json.loads((tmp_path / "v" / "run_summary.json").read_text())
    written = json.loads((examples_dir / "run_summary.json").read_text())["written"]
    assert summary["examples"] == written and summary["anomalies"] == 0
    page = report.read_text()
    assert page.count('class="feature-row"') == 3 * 9  # nine features in each of three splits
    assert 'src="data:image/png;base64,' in page


def _broken_examples(examples_dir):
    """The real train Examples, three of them broken the way a bad upstream change would."""
    records = [tf.train.Example.FromString(r.numpy()) for r in
               tf.data.TFRecordDataset(sorted(str(p) for p in examples_dir.glob("train-*.tfrecord")))]
    wrong_size = records[0]
    wrong_size.features.feature["img_64"].int64_list.value[:] = [0] * (28 * 28)  # a 28x28 image
    records[1].features.feature["label"].int64_list.value[:] = [500]  # beyond the 344 classes
    records[2].features.feature["img_64"].int64_list.value[5] = 300  # not a pixel value
    return records


def test_broken_quickdraw_examples_are_reported(examples_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    with tf.io.TFRecordWriter(str(broken / "train-00000-of-00001.tfrecord")) as writer:
        for example in _broken_examples(examples_dir):
            writer.write(example.SerializeToString())
    assert _exit_status([f"--examples_dir={broken}", f"--schema={QUICKDRAW_SCHEMA}", "--environment=TRAINING",
                         f"--output_dir={tmp_path / 'v'}"]) == 1
    rows = {r["feature"]: r for r in json.loads((tmp_path / "v" / "anomalies.json").read_text())}
    assert sorted(rows) == ["img_64", "label"]
    assert sorted(rows["img_64"]["kinds"]) == ["INT_TYPE_BIG_INT", "INVALID_FEATURE_SHAPE"]
    assert "value lengths vary" in rows["img_64"]["description"]
    assert "Unexpectedly large value: 300." in rows["img_64"]["description"]
    assert rows["label"]["kinds"] == ["INT_TYPE_BIG_INT"]
    assert rows["label"]["short_description"] == "Out-of-range values"

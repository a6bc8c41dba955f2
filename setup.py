"""Beam preprocessing and validation toolkit: ingest, transform and validate ML data.

Dataflow workers install this package through `--setup_file ./setup.py`. Exact versions
live in requirements/constraints.txt (install with `pip install -c` that file).
"""

import setuptools

setuptools.setup(
    name="beam-ml-preprocessing",
    version="0.1.0",
    description="Beam jobs that turn raw data into validated, transformed TFRecords.",
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(include=["beam_jobs", "beam_jobs.*", "transforms", "transforms.*", "schemas"]),
    package_data={"schemas": ["*/schema.pbtxt"]},
    install_requires=[
        "apache-beam[gcp]>=2.61,<2.62",
        "tensorflow>=2.16,<2.17",
        "tensorflow-transform>=1.16,<1.17",
        "tensorflow-data-validation>=1.16.1,<1.17",
        "tfx-bsl>=1.16,<1.17",
        "numpy<2",
        "pyarrow>=10,<11",
        "orjson>=3.9",
        "google-crc32c>=1.5",
        "opencv-python-headless>=4.10,<4.11",
    ],
    extras_require={"test": ["pytest>=8"]},
)

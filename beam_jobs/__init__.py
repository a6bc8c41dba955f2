"""Beam jobs: ingest raw data into tf.train.Example TFRecords, transform and validate them.

Every job is a module with `run(argv)`; run one with `python -m beam_jobs.<job> --help`.
"""

import os
import warnings

# TensorFlow's C++ start-up chatter (CUDA not found, oneDNN, TensorRT) at INFO and WARNING;
# its errors still show. A user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Google client libraries that Beam imports warn on every start that they will drop
# Python 3.11 in 2027 and want a newer grpcio: facts of the pinned stack, not of a run.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.(api_core|auth)\.")

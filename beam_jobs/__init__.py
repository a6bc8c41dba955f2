"""Beam jobs: ingest raw data into tf.train.Example TFRecords, transform and validate them.

Every job is a module with `run(argv)`; run one with `python -m beam_jobs.<job> --help`.
"""

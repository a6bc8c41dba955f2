"""What analyze_and_transform and transform share: reading raw Examples, transforming, writing.

Raw Examples reach TFT as RecordBatches of a fixed size (the fast TFT input path), with the
hash of each serialized record as a pass-through column (ORDER_COLUMN). The TFXIO is tfx_bsl's TFRecordToTensorTFXIO,
whose decoder is `tf.io.parse_example` with the raw schema's feature spec (saved as a
TFGraphRecordDecoder): the same tensors TFExampleRecord's decoder gives, five times faster
(2 us per taxi row, not 11). Each file is read with TF's own TFRecord reader in batches
(ReadRecordBatchesFn), not through the TFXIO's BeamSource: Beam's Python TFRecord reader and one
Beam element per record cost 8 us a row more, and batches cut by the file, not by the runner's
bundles, keep TFT's float sums the same on every runner.

Each transformed row is written in a shard chosen by, and sorted by, the hash of its raw
record: the same raw rows give the same output bytes whether analyze_and_transform or
transform wrote them. Only the hash travels with the row, not the record: TFT copies
pass-through columns, and Beam samples element sizes by serializing them.
"""

import importlib
import logging
import math
from typing import Callable, Dict, List, NamedTuple, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from beam_jobs import example_bytes, inputs, local_workers, options, outputs, runs, splits
from beam_jobs.progress import Progress

ORDER_COLUMN = "__raw_record_hash__"  # splits.key_hash of the serialized raw Example, one per row
RAW_METADATA_DIR = "metadata"  # tft.TFTransformOutput.RAW_METADATA_DIR
TRANSFORM_FN_DIR = "transform_fn"
TRANSFORMED_METADATA_DIR = "transformed_metadata"
# Fixed RecordBatch size: TFT's per-batch float32 partial sums (means, variances) depend on
# how rows are batched, so an adaptive batch size would make outputs differ run to run.
# TFT pays per batch (a TF call, tensor conversions), so batches are big: on 1M taxi rows
# 32,768 took 10% less time than 8,192, for 250 MB more peak memory. Wide rows get fewer:
# a batch holds about _VALUES_PER_BATCH values (1,021 rows of 64x64 QuickDraw images).
DEFAULT_BATCH_SIZE = 32768
_VALUES_PER_BATCH = 1 << 22


def load_function(spec: str) -> Callable:
    """`package.module:function` -> the function (the --preprocessing_fn flag)."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise options.UsageError(f"--preprocessing_fn must look like module:function, got {spec!r}")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise options.UsageError(f"--preprocessing_fn {spec!r} cannot be loaded: {error}") from error
    if not callable(function):
        raise options.UsageError(f"--preprocessing_fn {spec!r} is not a function")
    return function


def split_files(examples_dir: str) -> Dict[str, List[str]]:
    """The Example TFRecords of each split an ingest job wrote into examples_dir."""
    files = {}
    for split in splits.SPLIT_NAMES:
        pattern = outputs.join(examples_dir, f"{split}-*-of-*.tfrecord*")
        files[split] = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    if not files["train"] and not any(files.values()):
        raise options.UsageError(
            f"{examples_dir} holds no {{train,eval,test}}-*-of-*.tfrecord files; point --examples_dir "
            "at the output of an ingest job")
    return files


def optional_single_values(schema):
    """A copy of the schema where one-value features may be missing (sparse, not dense).

    A curated schema marks some features required (`shape {dim {size: 1}}`); read that way,
    one Example without the value fails the whole TFT job. Presence is the validation step's
    business; here the preprocessing_fn fills missing values instead.
    """
    relaxed = type(schema)()
    relaxed.CopyFrom(schema)
    for feature in relaxed.feature:
        if feature.HasField("shape") and [d.size for d in feature.shape.dim] == [1]:
            feature.ClearField("shape")
            feature.value_count.min = 1
            feature.value_count.max = 1
    return relaxed


def write_raw_metadata(schema, transform_output_dir: str) -> None:
    """TFT's WriteTransformFn leaves the raw metadata out; TFTransformOutput.raw_feature_spec needs it."""
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io

    metadata_io.write_metadata(dataset_metadata.DatasetMetadata(schema),
                               outputs.join(transform_output_dir, RAW_METADATA_DIR))


def read_raw_schema(transform_dir: str):
    from tensorflow_transform.tf_metadata import metadata_io

    path = outputs.join(transform_dir, RAW_METADATA_DIR)
    if not FileSystems.exists(outputs.join(transform_dir, TRANSFORM_FN_DIR)) or not FileSystems.exists(path):
        raise options.UsageError(
            f"{transform_dir} is not an analyze_and_transform output (no {TRANSFORM_FN_DIR}/ and "
            f"{RAW_METADATA_DIR}/); run beam_jobs.analyze_and_transform first")
    return metadata_io.read_metadata(path).schema


def save_example_decoder(schema, temp_dir: str) -> str:
    """Saves a decoder of serialized Examples by the schema's feature spec; its path.

    The path must be readable by every worker: it lives in the run's temp dir.
    """
    import tensorflow as tf
    from tensorflow_transform.tf_metadata import schema_utils
    from tfx_bsl.coders import tf_graph_record_decoder

    feature_spec = schema_utils.schema_as_feature_spec(schema).feature_spec

    class ExampleDecoder(tf_graph_record_decoder.TFGraphRecordDecoder):
        def decode_record(self, records):
            return tf.io.parse_example(records, feature_spec)

    path = outputs.join(temp_dir, "example_decoder")
    tf_graph_record_decoder.save_decoder(ExampleDecoder(), path)
    return path


class ReadRecordBatchesFn(beam.DoFn):
    """A TFRecord file of Examples -> RecordBatches of `batch_size` rows, in file order.

    The rows are decoded by the TFXIO's decoder and converted as the TFXIO does, so they match
    its TensorAdapterConfig (with ORDER_COLUMN appended when `with_order`); a file that cannot
    be read fails the job with its name.
    """

    def __init__(self, decoder_path: str, batch_size: int, with_order: bool):
        self._decoder_path, self._batch_size, self._with_order = decoder_path, batch_size, with_order

    def setup(self):
        from tfx_bsl.coders import tf_graph_record_decoder
        from tfx_bsl.tfxio import tensor_to_arrow

        decoder = tf_graph_record_decoder.load_decoder(self._decoder_path)
        self._decode = decoder.decode_record
        self._converter = tensor_to_arrow.TensorsToRecordBatchConverter(decoder.output_type_specs())

    def process(self, path: str):
        import tensorflow as tf

        records = tf.data.TFRecordDataset(path, compression_type="GZIP" if path.endswith(".gz") else "")
        batches = iter(records.batch(self._batch_size))
        try:
            # get_next_as_optional: plain iteration makes TF 2.16 log a warning at the end
            # of every file ("Local rendezvous is aborting ... End of sequence").
            while (next_batch := batches.get_next_as_optional()).has_value():
                batch = next_batch.get_value()
                decoded = self._converter.convert(self._decode(batch))
                if self._with_order:
                    hashes = splits.key_hashes(batch.numpy().tolist())
                    offsets = pa.array(np.arange(len(hashes) + 1, dtype=np.int64))
                    decoded = pa.RecordBatch.from_arrays(
                        decoded.columns + [pa.LargeListArray.from_arrays(offsets, pa.array(hashes, pa.uint64()))],
                        decoded.schema.names + [ORDER_COLUMN])
                yield decoded
        except tf.errors.OpError as error:
            raise ValueError(f"{path}: cannot read its Examples: {error.message}") from error


def batch_size_for(schema, requested: Optional[int]) -> int:
    """The --batch_size given, or the default for rows of this raw schema (see DEFAULT_BATCH_SIZE)."""
    if requested is not None:
        if requested < 1:
            raise options.UsageError("--batch_size must be at least 1")
        return requested
    values = sum(max(1, math.prod(dim.size for dim in feature.shape.dim)) for feature in schema.feature)
    return max(1, min(DEFAULT_BATCH_SIZE, _VALUES_PER_BATCH // max(1, values)))


def read_raw_splits(pipeline, files: Dict[str, List[str]], decoder_path: str, batch_size: int,
                    stage: str = "Read", with_order: bool = True):
    """Each split's raw Examples as RecordBatches (decoded by `save_example_decoder`'s decoder),
    with each record's hash in ORDER_COLUMN (unless not `with_order`: the analysis has no use
    for it).

    Returns ({split: PCollection of RecordBatch}, the TensorAdapterConfig TFT needs).
    """
    from tfx_bsl.tfxio import record_to_tensor_tfxio, tensor_adapter

    raw, tensor_adapter_config = {}, None
    for split, split_files in files.items():
        if not split_files:
            continue
        if tensor_adapter_config is None:
            tensor_adapter_config = record_to_tensor_tfxio.TFRecordToTensorTFXIO(
                split_files, decoder_path, telemetry_descriptors=[stage]).TensorAdapterConfig()
            if with_order:
                tensor_adapter_config = tensor_adapter.TensorAdapterConfig(
                    tensor_adapter_config.arrow_schema.append(pa.field(ORDER_COLUMN, pa.large_list(pa.uint64()))),
                    tensor_adapter_config.tensor_representations, tensor_adapter_config.original_type_specs)
        title = f"{stage}{split.capitalize()}"
        raw[split] = (pipeline
                      | f"{title}Files" >> beam.Create(split_files)  # reshuffled by Create: spread over workers
                      | title >> beam.ParDo(ReadRecordBatchesFn(decoder_path, batch_size, with_order)))
    return raw, tensor_adapter_config


class EncodeTransformedFn(runs.SpillingDoFn):
    """Transformed (RecordBatch, _) -> ((split, shard), run file of Example bytes).

    A row's shard and its place there come from the hash of its raw record; rows are spilled
    to run files in `temp_dir` (runs.SpillBuffer), so only file names are shuffled.
    """

    COUNTS_TAG = "counts"

    def __init__(self, job: str, split: str, num_shards: int, temp_dir: str, range_bits: int):
        super().__init__(temp_dir, range_bits)
        self._job, self._split, self._num_shards = job, split, num_shards
        self._shard_keys, self._split_index = splits.shard_keys(num_shards), splits.SPLIT_NAMES.index(split)

    def setup(self):
        self._progress = Progress(self._job, f"{self._split} examples")

    def process(self, element):
        # TFT appends the pass-through column to the transformed batch (its second element
        # holds only pass-through values that do not match the batch size).
        record_batch, _ = element
        index = record_batch.schema.get_field_index(ORDER_COLUMN)
        if index < 0:  # TFT puts pass-through values aside when the batch size changes
            raise ValueError("the preprocessing_fn changed the number of rows of a batch; the transformed "
                             "Examples can then not be matched to their raw Examples (one output row per input row)")
        hashes = record_batch.column(index).flatten().to_numpy()
        keep = [i for i in range(record_batch.num_columns) if i != index]
        record_batch = pa.RecordBatch.from_arrays([record_batch.column(i) for i in keep],
                                                  [record_batch.schema.names[i] for i in keep])
        encoded = example_bytes.encode_by_column(record_batch)
        shards = (hashes % np.uint64(self._num_shards)).astype(np.int64)
        self._runs.add(runs.rows(hashes, np.zeros(len(hashes), np.uint64), encoded), self._shard_keys,
                       splits.shard_key_indices(self._split_index, shards, self._num_shards))
        self._progress.add(len(encoded))
        yield beam.pvalue.TaggedOutput(self.COUNTS_TAG, {"written." + self._split: len(encoded)})
        if self._runs.full:
            yield from self._runs.spill()


class TransformedSplits(NamedTuple):
    runs: beam.PCollection  # ((split, shard), run file of Example bytes)
    counts: beam.PCollection  # {name: n}


def transform_splits(job: str, raw: Dict[str, beam.PCollection], tensor_adapter_config, transform_fn,
                     num_shards: int, temp_dir: str, range_bits: int) -> TransformedSplits:
    """Applies transform_fn to every split's RecordBatches; raw counts and encoded examples out."""
    import tensorflow_transform.beam as tft_beam

    encoded, counts = [], []
    for split, record_batches in raw.items():
        title = split.capitalize()
        counts.append(record_batches | f"Count{title}" >> beam.Map(lambda rb, s=split: {"read." + s: rb.num_rows}))
        transformed, _ = (((record_batches, tensor_adapter_config), transform_fn)
                          | f"Transform{title}" >> tft_beam.TransformDataset(output_record_batches=True))
        result = transformed | f"Encode{title}" >> beam.ParDo(
            EncodeTransformedFn(job, split, num_shards, temp_dir, range_bits)).with_outputs(
                EncodeTransformedFn.COUNTS_TAG, main="runs")
        encoded.append(result.runs)
        counts.append(result[EncodeTransformedFn.COUNTS_TAG])
    pipeline = next(iter(raw.values())).pipeline
    return TransformedSplits(
        tuple(encoded) | "AllSplits" >> beam.Flatten(pipeline=pipeline),
        tuple(counts) | "AllCounts" >> beam.Flatten(pipeline=pipeline),
    )


def add_output_args(parser) -> None:
    options.add_shard_args(parser)
    parser.add_argument("--batch_size", type=int,
                        help=f"Examples per RecordBatch (default {DEFAULT_BATCH_SIZE}, fewer for wide rows such as "
                             "images); fixed so outputs are reproducible.")


def write_outputs(result: TransformedSplits, staging_dir: str, num_shards: int, compression: str) -> None:
    """Transformed Examples as sorted shards per split, and the counts for run_summary.json."""
    _ = result.runs | "WriteExamples" >> runs.WriteSpilledShards(
        staging_dir, outputs.example_files(num_shards, compression),
        lambda path, records: outputs.write_tfrecords(path, records, compression))
    _ = result.counts | "WriteCounts" >> outputs.WriteCounts(staging_dir)


def owned_globs() -> List[str]:
    return [f"{split}-*-of-*.tfrecord*" for split in splits.SPLIT_NAMES] + [
        f"{TRANSFORM_FN_DIR}/**", f"{TRANSFORMED_METADATA_DIR}/**", f"{RAW_METADATA_DIR}/**"]


def transform_and_publish(job: str, args, pipeline_options, *, files: Dict[str, List[str]], schema,
                          owned: List[str], transform_fn_for: Callable, transform_dir: str, extra: dict) -> dict:
    """What both TFT jobs do around their transform_fn; returns the run summary.

    `args.batch_size` (for the schema: batch_size_for) and `args.num_shards` (auto: from the
    largest split's input) are first resolved, so the summary records what was used. In a
    staging directory: `transform_fn_for(pipeline, staging_dir, decoder_path)` puts the
    transform_fn in the pipeline (`decoder_path` is for read_raw_splits), every split of
    `files` is transformed with it and written with its counts; then the run is published
    with its summary and logged.
    """
    import tensorflow_transform.beam as tft_beam

    args.batch_size = batch_size_for(schema, args.batch_size)
    split_bytes = [inputs.expanded_size(paths) for paths in files.values()]
    # Sized from the raw Examples: a transform that widens features (QuickDraw's pixels, int64
    # varints, become 4-byte floats) makes files several times larger than SHARD_BYTES.
    outputs.resolve_num_shards(args, job, lambda: max(split_bytes))
    with outputs.StagedOutput(args.output_dir, owned) as staged:
        with local_workers.pipeline(pipeline_options) as pipeline:
            with tft_beam.Context(temp_dir=staged.temp_dir, passthrough_keys={ORDER_COLUMN}):
                decoder_path = save_example_decoder(schema, staged.temp_dir)
                transform_fn = transform_fn_for(pipeline, staged.staging_dir, decoder_path)
                raw, tensor_adapter_config = read_raw_splits(pipeline, files, decoder_path, args.batch_size)
                range_bits = runs.range_bits_for(sum(split_bytes) // args.num_shards)
                result = transform_splits(job, raw, tensor_adapter_config, transform_fn, args.num_shards,
                                          staged.temp_dir, range_bits)
                write_outputs(result, staged.staging_dir, args.num_shards, args.compression)
        summary = build_summary(staged.read_counts(), dict(
            extra, transform_fn=outputs.join(transform_dir, TRANSFORM_FN_DIR),
            options=dict(sorted(vars(args).items()))))
        staged.publish(summary)
    log_summary(job, summary, transform_dir)
    return summary


def build_summary(counts: Dict[str, int], extra: dict) -> dict:
    """Per-split read and written counts; every raw Example read must have been written."""
    summary = dict(extra)
    summary["read"] = {split: counts.get("read." + split, 0) for split in splits.SPLIT_NAMES}
    summary["written"] = {split: counts.get("written." + split, 0) for split in splits.SPLIT_NAMES}
    if summary["read"] != summary["written"]:
        raise RuntimeError(f"counts do not reconcile: read {summary['read']} but wrote {summary['written']}")
    return summary


def log_summary(job: str, summary: dict, output_dir: str) -> None:
    written = summary["written"]
    logging.info("%s: transformed %s examples (train %s, eval %s, test %s). transform_fn in %s",
                 job, f"{sum(written.values()):,}", f"{written['train']:,}", f"{written['eval']:,}",
                 f"{written['test']:,}", summary["transform_fn"])
    logging.info("%s: a trainer loads it with transforms.trainer.TransformOutput(%r)", job, output_dir)

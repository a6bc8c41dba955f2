"""QuickDraw job benchmark: `python -m benchmarks.quickdraw [--drawings N]`.

On the real simplified sample (../shared/data/quickdraw) replicated to N drawings (default
200,000; key_ids made unique per replica) it measures, one after the other in this run:

  raster_vs_cv2    the project's rasterizer vs straightforward OpenCV LINE_AA (one polylines
                   call per stroke on rounded float coordinates), same size and line width,
                   drawings/s ratio; quality of both against an 8x supersampled rendering.
  job_vs_fast_loop the job on the DirectRunner, one worker, vs a plain single-process loop doing
                   the same work and writing the same files (orjson parse and checks, OpenCV
                   raster, tfx_bsl batch Example encoding, labels, shards sorted in memory,
                   tf.io.TFRecordWriter), drawings/s ratio; the bytes are compared.
  workers2_vs_1    the job with two worker processes vs one, drawings/s ratio.

For reference it also times a loop that skips labels, splits and sorting (one file in input
order). Each timed run is its own fresh process, with its imports done before its clock
starts, after the previous run's files are written back to disk and deleted. The variants run
in `--repeats` rounds (default 2), one after the other, and each variant's best time counts
(every time is printed). The last line printed is one JSON object with the three ratios and
the figures.
"""

import argparse
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np
import orjson
import tensorflow as tf

import benchmarks
from beam_jobs import drawing_examples, example_bytes, outputs, quickdraw_to_tfrecord, rasterize, runs, splits, strokes

_SAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "quickdraw", "simplified")


def make_input(directory: str, drawings: int, files: int = 16) -> int:
    """Replicates the sample into `files` ndjson files of interleaved categories."""
    lines = []
    for path in sorted(glob.glob(os.path.join(_SAMPLE, "*.ndjson"))):
        with open(path, "rb") as handle:
            lines.extend(orjson.loads(line) for line in handle if line.strip())
    if not lines:
        raise SystemExit(f"no sample data under {_SAMPLE}")
    handles = [open(os.path.join(directory, f"part-{i:02d}.ndjson"), "wb") for i in range(files)]
    for i in range(drawings):
        record = dict(lines[i % len(lines)], key_id=f"{lines[i % len(lines)]['key_id']}-{i // len(lines)}")
        handles[i % files].write(orjson.dumps(record) + b"\n")
    for handle in handles:
        handle.close()
    return drawings


def cv2_baseline(stroke_lists, size: int, line_width: int) -> np.ndarray:
    """The straightforward OpenCV rasterization: scale, round, one polylines call per stroke."""
    points = np.concatenate(stroke_lists)
    low, high = points.min(axis=0), points.max(axis=0)
    extent = float((high - low).max()) or 1.0
    margin = rasterize.default_margin(size)
    scale = (size - 1 - 2 * margin - line_width) / extent
    offset = (size - 1) / 2.0 - (low + high) / 2.0 * scale
    image = np.zeros((size, size), dtype=np.uint8)
    for stroke in stroke_lists:
        pts = np.round(stroke * scale + offset).astype(np.int32)
        cv2.polylines(image, [pts], False, 255, line_width, cv2.LINE_AA)
    return image


def bench_raster(paths, size: int, line_width: int, limit: int = 50_000):
    drawings = []
    for path in paths:
        with open(path, "rb") as handle:
            drawings.extend(strokes.parse_drawing(line) for line in handle)
        if len(drawings) >= limit:
            break
    drawings = drawings[:limit]
    timings = {}
    # Each gets its natural input: per-stroke arrays for OpenCV, one point array for ours.
    inputs = {"cv2": [(d.strokes,) for d in drawings], "ours": [(d.points, d.lengths) for d in drawings]}
    for name, fn in (("cv2", cv2_baseline), ("ours", rasterize.rasterize)):
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            images = [fn(*args, size, line_width) for args in inputs[name]]
            best = min(best, time.perf_counter() - start)
        timings[name] = (len(drawings) / best, images)
    # Quality: distance of each to an 8x supersampled rendering box-filtered down to size.
    errors = {name: [] for name in timings}
    for i, d in enumerate(drawings[:2000]):
        big = rasterize.rasterize(d.points, d.lengths, size * 8, line_width * 8, margin=rasterize.default_margin(size) * 8)
        reference = cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA).astype(np.int16)
        for name in timings:
            errors[name].append(np.abs(timings[name][1][i] - reference).mean())
    return timings["ours"][0], timings["cv2"][0], {name: float(np.mean(e)) for name, e in errors.items()}


def fast_loop(paths, out_dir: str, size: int, line_width: int, num_shards: int, batch: int = 512) -> None:
    """Single process, no Beam, the job's output files: every drawing parsed and kept in
    memory, labelled from the sorted words, rasterized and encoded in batches, each shard
    sorted in the job's order and written with TensorFlow's own TFRecordWriter."""
    drawings = []
    for file_index, path in enumerate(paths):
        with open(path, "rb") as handle:
            for line_number, line in enumerate(handle, 1):
                try:
                    drawings.append((file_index, line_number, strokes.parse_drawing(line)))
                except strokes.Rejected:
                    pass
    labels = drawing_examples.label_pieces(sorted({d.word for _, _, d in drawings}))
    files = outputs.example_files(num_shards, "none")
    rows = {shard_key: [] for shard_key in files}
    for start in range(0, len(drawings), batch):
        chunk = drawings[start:start + batch]
        columns = drawing_examples.make_batch([(n, d) for _, n, d in chunk], size, line_width, (0.8, 0.1, 0.1),
                                              num_shards)
        encoded = example_bytes.encode_by_column(drawing_examples.to_record_batch(columns, size)).to_pylist()
        orders = runs.as_ints(columns.key_hashes, runs.line_orders([f for f, _, _ in chunk], [n for _, n, _ in chunk]))
        for (_, _, d), order, split, shard, example in zip(chunk, orders, columns.split.tolist(),
                                                           columns.shard.tolist(), encoded):
            rows[(splits.SPLIT_NAMES[split], shard)].append((order, example + labels[d.word]))
    for shard_key, shard_rows in rows.items():
        shard_rows.sort(key=lambda row: row[0])
        with tf.io.TFRecordWriter(os.path.join(out_dir, files[shard_key])) as writer:
            for _, record in shard_rows:
                writer.write(record)


def plain_loop(paths, out_dir: str, size: int, line_width: int, batch: int = 512) -> None:
    """What a quick script would do, for reference: one file in input order, no splits, no
    labels, no sorting."""
    with tf.io.TFRecordWriter(os.path.join(out_dir, "all.tfrecord")) as writer:
        pending = []

        def flush():
            columns = drawing_examples.make_batch(list(enumerate(pending)), size, line_width, (0.8, 0.1, 0.1), 1)
            for record in example_bytes.encode_by_column(drawing_examples.to_record_batch(columns, size)).to_pylist():
                writer.write(record)
            pending.clear()

        for path in paths:
            with open(path, "rb") as handle:
                for line in handle:
                    pending.append(strokes.parse_drawing(line))
                    if len(pending) == batch:
                        flush()
        if pending:
            flush()


_VARIANTS = ("plain", "loop", "job1", "job2")


def child(variant: str, data: str, out: str, image_size: int, line_width: int) -> None:
    """Times one variant in a fresh process (imports done before the clock starts) and prints
    its seconds as JSON: no variant inherits another's heap or imported modules."""
    paths = sorted(glob.glob(os.path.join(data, "*.ndjson")))
    flags = [f"--input={data}/*.ndjson", f"--output_dir={out}", f"--image_size={image_size}",
             f"--line_width={line_width}"]
    workers = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"] if variant == "job2" else []
    start = time.perf_counter()
    if variant == "plain":
        os.makedirs(out)
        plain_loop(paths, out, image_size, line_width)
    elif variant == "loop":
        os.makedirs(out)  # as many files as the job writes with its default --num_shards auto
        fast_loop(paths, out, image_size, line_width, outputs.auto_num_shards(outputs.largest_split_bytes(
            quickdraw_to_tfrecord.example_bytes_estimate(paths, image_size), (0.8, 0.1, 0.1))))
    else:
        quickdraw_to_tfrecord.run(flags + workers)
    print(json.dumps({"seconds": time.perf_counter() - start}))


def shard_digests(out_dir: str) -> dict:
    """sha256 of each Example file, to compare outputs after they are deleted."""
    digests = {}
    for path in sorted(glob.glob(os.path.join(out_dir, "*.tfrecord"))):
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
        digests[os.path.basename(path)] = digest.hexdigest()
    return digests


def timed_child(variant: str, data: str, out: str, args) -> float:
    # Written-back first: a variant must not pay for the pages the one before left dirty.
    os.sync()
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.quickdraw", "--child", variant, "--data", data, "--out", out,
         f"--image_size={args.image_size}", f"--line_width={args.line_width}"],
        capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["seconds"]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description="QuickDraw job benchmark")
    parser.add_argument("--drawings", type=int, default=200_000)
    benchmarks.add_repeats_arg(parser)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--line_width", type=int, default=1)
    parser.add_argument("--child", choices=_VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.data, args.out, args.image_size, args.line_width)
    work = tempfile.mkdtemp(prefix="qd-bench-")
    try:
        data = os.path.join(work, "data")
        os.makedirs(data)
        n = make_input(data, args.drawings)
        paths = sorted(glob.glob(os.path.join(data, "*.ndjson")))
        ours, cv2_rate, error = bench_raster(paths, args.image_size, args.line_width)
        print(f"rasterize: ours {ours:,.0f}/s, OpenCV baseline {cv2_rate:,.0f}/s; mean |error| against an "
              f"8x supersampled reference: ours {error['ours']:.2f}/255, baseline {error['cv2']:.2f}/255")
        times, digests = {variant: [] for variant in _VARIANTS}, {}
        for round_number in range(1, args.repeats + 1):
            for variant, label in (("plain", "plain loop (one unsorted file, no labels)"),
                                   ("loop", "fast loop (the job's files)"), ("job1", "job, 1 worker"),
                                   ("job2", "job, 2 workers")):
                out = os.path.join(work, variant)
                times[variant].append(timed_child(variant, data, out, args))
                print(f"round {round_number}: {label}: {times[variant][-1]:.1f} s, "
                      f"{n / times[variant][-1]:,.0f} drawings/s", flush=True)
                if variant != "plain":
                    digests.setdefault(variant, []).append(shard_digests(out))
                shutil.rmtree(out)  # each variant starts with the same free memory and disk
        seconds = benchmarks.best_of(times)
        same = all(found == digests["loop"][0] for found in digests["loop"] + digests["job1"] + digests["job2"])
        print(f"the loop and the job (1 and 2 workers) wrote the same bytes in {len(digests['job1'][0])} "
              "Example files:", "yes" if same else "NO")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "raster_vs_cv2": round(ours / cv2_rate, 3),
        "job_vs_fast_loop": round(seconds["loop"] / seconds["job1"], 3),
        "workers2_vs_1": round(seconds["job1"] / seconds["job2"], 3),
        "drawings": n,
        "raster_error_ours": round(error["ours"], 3),
        "raster_error_cv2": round(error["cv2"], 3),
        "same_bytes_as_loop": same,
        "example_files": len(digests["job1"][0]),
        "seconds_per_round": {variant: [round(t, 2) for t in found] for variant, found in times.items()},
        "plain_loop_per_s": round(n / seconds["plain"]),
        "fast_loop_per_s": round(n / seconds["loop"]),
        "job_1_worker_per_s": round(n / seconds["job1"]),
        "job_2_workers_per_s": round(n / seconds["job2"]),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

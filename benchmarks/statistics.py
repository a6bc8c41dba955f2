"""Statistics benchmark: `python -m benchmarks.statistics [--rows N]`.

On the real taxi sample (../shared/data/taxi/data.csv) replicated to N rows (default
1,000,000; the file is made once under /tmp), it runs side by side in this run, each in a
fresh process so that time and memory are its own:

  tfdv      `tfdv.generate_statistics_from_csv(file)` with its defaults (DirectRunner, 1 process)
  ours      `python -m beam_jobs.statistics --input file` with its defaults (report off)
  ours_2w   the same with `--direct_num_workers=2 --direct_running_mode=multi_processing`

Wall time is the whole call, launcher included; the libraries (TensorFlow, TFDV, Beam) are
imported before the clock starts, as in the other benchmarks, and their import time is
printed beside it (workers2_vs_1_with_imports counts it in). Before each variant the files
the previous one wrote are flushed to disk. The variants run in `--repeats` timed rounds
(default 2), one after the other; each variant's best time counts (every time is printed).
Then one more round measures memory: the largest summed proportional memory (PSS) of the
process and its worker processes, sampled from /proc every 0.2 s (summed resident memory,
which counts the pages forked workers share with the launcher once per process, is printed
beside it). Memory is not sampled in the timed rounds: reading a process's PSS walks its page
tables under its memory-map lock, and that slowed the two-worker run, which has no core to
spare, by about 0.5 s in 3.5 s. The statistics of tfdv and ours from that last round are
compared feature by feature (counts exactly; means, deviations, min, max within float32
rounding; string top values exactly). The last line printed is one JSON object:
ours_over_tfdv (wall-time ratio, lower is better), workers2_vs_1 (speed-up of 2 worker
processes over 1), peak memory, and the raw figures.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import benchmarks

_SAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "taxi", "data.csv")
_VARIANTS = ("tfdv", "ours", "ours_2w")


def make_file(path: str, rows: int) -> str:
    """The sample's rows repeated in order up to `rows` data rows, written once."""
    if os.path.exists(path):
        return path
    with open(_SAMPLE, "rb") as handle:
        lines = handle.read().splitlines()
    header, body = lines[0], lines[1:]
    temporary = path + ".incomplete"
    with open(temporary, "wb") as out:
        out.write(header + b"\n")
        for start in range(0, rows, len(body)):
            out.write(b"\n".join(body[: min(len(body), rows - start)]) + b"\n")
    os.replace(temporary, path)
    return path


def _measure(variant: str, data: str, out: str) -> dict:
    """Runs one variant in this (fresh) process; returns its seconds, import seconds and output
    path. The libraries are imported before the clock starts, as in the other benchmarks: the
    same for every variant, and not the work measured."""
    start = time.perf_counter()
    import tensorflow_data_validation as tfdv

    from beam_jobs import statistics, stats_io

    imported = time.perf_counter()
    if variant == "tfdv":
        stats_path = os.path.join(out, "stats.tfrecord")
        tfdv.generate_statistics_from_csv(data, output_path=stats_path)
    else:
        workers = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"] if variant == "ours_2w" else []
        statistics.run([f"--input={data}", f"--output_dir={out}", *workers])
        stats_path = stats_io.stats_path(out, stats_io.ALL_SPLIT)
    return {"seconds": time.perf_counter() - imported, "import_seconds": imported - start, "stats": stats_path}


def _memory_kb(pid: int) -> tuple:
    """(proportional, resident) memory of a process in kB, from /proc/PID/smaps_rollup."""
    found = {}
    with open(f"/proc/{pid}/smaps_rollup") as handle:
        for line in handle:
            name, _, value = line.partition(":")
            if name in ("Pss", "Rss"):
                found[name] = int(value.split()[0])
    return found["Pss"], found["Rss"]


def _tree_memory_bytes(root: int) -> tuple:
    """(proportional, resident) memory of `root` and all its descendants. Proportional memory
    counts a page shared by n processes as 1/n in each (forked workers share the launcher's
    pages until they write to them), so the sum is what the processes take together; resident
    memory counts it in each of them."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    pss = rss = 0
    todo = [root]
    while todo:  # smaps_rollup walks a process's page tables: only the tree's are read
        pid = todo.pop()
        try:
            found = _memory_kb(pid)
        except (OSError, ValueError, KeyError):
            found = (0, 0)
        pss, rss = pss + found[0] * 1024, rss + found[1] * 1024
        todo.extend(children.get(pid, []))
    return pss, rss


def run_variant(variant: str, data: str, work: str, sample_memory: bool = False) -> dict:
    """One run of `variant` in a fresh process; with `sample_memory`, its peak memory too."""
    out = os.path.join(work, variant)
    shutil.rmtree(out, ignore_errors=True)  # each round writes a new output, not over the last one
    os.sync()  # a variant must not pay for the pages the one before left dirty
    child = subprocess.Popen([sys.executable, "-m", "benchmarks.statistics", "--_variant", variant,
                              "--data", data, "--_out", out], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    peak = peak_rss = 0
    while sample_memory and child.poll() is None:
        pss, rss = _tree_memory_bytes(child.pid)
        peak, peak_rss = max(peak, pss), max(peak_rss, rss)
        time.sleep(0.2)
    output = child.communicate()[0].decode().strip().splitlines()
    if child.returncode != 0 or not output:
        raise RuntimeError(f"{variant} failed with status {child.returncode}")
    result = json.loads(output[-1])
    if sample_memory:
        result["peak_memory_mb"], result["peak_rss_sum_mb"] = round(peak / 2**20), round(peak_rss / 2**20)
    return result


def compare(ours_path: str, tfdv_path: str) -> list:
    """Differences between the two statistics: an empty list means the same content."""
    import tensorflow_data_validation as tfdv

    from beam_jobs import stats_io

    ours = stats_io.load_statistics(ours_path)[0].datasets[0]
    theirs = tfdv.load_statistics(tfdv_path).datasets[0]
    problems = []
    if ours.num_examples != theirs.num_examples:
        problems.append(f"num_examples {ours.num_examples} vs {theirs.num_examples}")
    by_name = {f.path.step[-1]: f for f in theirs.features}
    for feature in ours.features:
        name = feature.path.step[-1]
        other = by_name.pop(name, None)
        if other is None:
            problems.append(f"{name}: only in ours")
            continue
        if feature.type != other.type:
            problems.append(f"{name}: type {feature.type} vs {other.type}")
            continue
        if feature.HasField("num_stats"):
            a, b = feature.num_stats, other.num_stats
            if a.common_stats.num_non_missing != b.common_stats.num_non_missing:
                problems.append(f"{name}: non-missing {a.common_stats.num_non_missing} vs {b.common_stats.num_non_missing}")
            for field in ("mean", "std_dev", "min", "max", "num_zeros"):
                x, y = getattr(a, field), getattr(b, field)
                if abs(x - y) > 1e-6 * max(1.0, abs(x), abs(y)):
                    problems.append(f"{name}: {field} {x} vs {y}")
        else:
            a, b = feature.string_stats, other.string_stats
            if (a.common_stats.num_non_missing, a.unique) != (b.common_stats.num_non_missing, b.unique):
                problems.append(f"{name}: non-missing/unique differ")
            if [(v.value, v.frequency) for v in a.top_values] != [(v.value, v.frequency) for v in b.top_values]:
                problems.append(f"{name}: top values differ")
    problems.extend(f"{name}: only in TFDV's" for name in by_name)
    return problems


def _with_imports(result: dict) -> float:
    return result["seconds"] + result["import_seconds"]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--data", help="CSV to use (default: the sample replicated under /tmp).")
    benchmarks.add_repeats_arg(parser)
    parser.add_argument("--_variant", choices=_VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--_out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._variant:
        print(json.dumps(_measure(args._variant, args.data, args._out)))
        return {}
    data = args.data or make_file(os.path.join(tempfile.gettempdir(), f"taxi_{args.rows}.csv"), args.rows)
    with tempfile.TemporaryDirectory(prefix="bench_statistics_") as work:
        rounds = {variant: [] for variant in _VARIANTS}
        for round_number in range(1, args.repeats + 1):
            for variant in _VARIANTS:
                result = run_variant(variant, data, work)
                rounds[variant].append(result)
                print(f"round {round_number}: {variant:8} {result['seconds']:7.1f} s (+{result['import_seconds']:.1f} s "
                      f"of imports)  {args.rows / result['seconds']:9,.0f} rows/s", flush=True)
        memory = {}
        for variant in _VARIANTS:
            memory[variant] = run_variant(variant, data, work, sample_memory=True)
            print(f"memory:  {variant:8} peak {memory[variant]['peak_memory_mb']:,} MB proportional "
                  f"({memory[variant]['peak_rss_sum_mb']:,} MB resident, summed; this round's time "
                  f"{memory[variant]['seconds']:.1f} s is not counted)", flush=True)
        best = benchmarks.best_of({variant: [r["seconds"] for r in found] for variant, found in rounds.items()})
        # The memory round's run (its statistics and peak memory), with the timed rounds' figures.
        results = {variant: dict(memory[variant], seconds=best[variant],
                                 import_seconds=min(r["import_seconds"] for r in found))
                   for variant, found in rounds.items()}
        differences = compare(results["ours"]["stats"], results["tfdv"]["stats"])
    print("same statistics content as TFDV:", "yes" if not differences else "no: " + "; ".join(differences))
    summary = {
        "rows": args.rows,
        "ours_over_tfdv": round(results["ours"]["seconds"] / results["tfdv"]["seconds"], 3),
        "workers2_vs_1": round(results["ours"]["seconds"] / results["ours_2w"]["seconds"], 3),
        "workers2_vs_1_with_imports": round(_with_imports(results["ours"]) / _with_imports(results["ours_2w"]), 3),
        "import_seconds": {v: round(results[v]["import_seconds"], 2) for v in _VARIANTS},
        "peak_memory_mb": {v: results[v]["peak_memory_mb"] for v in _VARIANTS},
        "peak_rss_sum_mb": {v: results[v]["peak_rss_sum_mb"] for v in _VARIANTS},
        "ours_memory_over_tfdv": round(results["ours"]["peak_memory_mb"] / results["tfdv"]["peak_memory_mb"], 3),
        "seconds": {v: round(results[v]["seconds"], 2) for v in _VARIANTS},
        "seconds_per_round": {v: [round(r["seconds"], 2) for r in rounds[v]] for v in _VARIANTS},
        "same_content": not differences,
        "differences": differences,
    }
    print(json.dumps(summary, sort_keys=True))
    return summary


if __name__ == "__main__":
    main()

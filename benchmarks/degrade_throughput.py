"""Degradation engine throughput: pairs/s on one core, per task, at 512² and 1024².

Throughput is pairs per CPU-second of a single-threaded process (OpenCV and
BLAS pinned to one thread), so it reads the same on a busy machine.
Each size runs in its own single-threaded child process, so the peak-memory
figure is that process's own. Prints a table, then one JSON line.

    python benchmarks/degrade_throughput.py [--sizes 512 1024] [--seconds 1.5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

TARGETS = {"mean_512": 60.0, "min_512": 20.0, "mean_1024": 15.0, "peak_mb_1024": 300.0}


def _measure(size: int, seconds: float) -> dict:
    import resource
    import time

    import cv2
    import numpy as np
    from skimage import data as skdata

    from realrestorer.degrade import TASKS, degrade

    cv2.setNumThreads(1)
    photos = [cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
              for img in (skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket())]
    rows = {}
    for task in TASKS:
        for warm in range(2):
            degrade(task, photos[warm], np.random.default_rng(warm))
        results = {}
        for encode in (False, True):
            # CPU time of this single-threaded process: pairs per core-second, which
            # other load on the machine does not distort the way wall time would.
            count, started = 0, time.process_time()
            while time.process_time() - started < seconds or count < 3:
                rng = np.random.default_rng(count)
                clean = photos[count % len(photos)]
                out, _ = degrade(task, clean, rng)
                if encode:  # what a shard stores: the clean target as PNG, the input as PNG
                    cv2.imencode(".png", clean)
                    cv2.imencode(".png", out)
                count += 1
            results["encode" if encode else "degrade"] = count / (time.process_time() - started)
        rows[task] = results
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"size": size, "tasks": rows, "peak_mb": peak_mb}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="square sizes to measure")
    parser.add_argument("--seconds", type=float, default=1.5, help="time per task and mode")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.child, args.seconds)))
        return 0

    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    by_size = {}
    for size in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--child", str(size), "--seconds", str(args.seconds)],
                             env=env, check=True, capture_output=True, text=True).stdout
        by_size[size] = json.loads(out.strip().splitlines()[-1])

    tasks = list(next(iter(by_size.values()))["tasks"])
    header = f"{'task':<12}" + "".join(f"{f'{s}² pairs/s':>15}{f'{s}² +encode':>14}" for s in args.sizes)
    print(header)
    print("-" * len(header))
    for task in tasks:
        line = f"{task:<12}"
        for size in args.sizes:
            r = by_size[size]["tasks"][task]
            line += f"{r['degrade']:>15.1f}{r['encode']:>14.1f}"
        print(line)
    summary = {"benchmark": "degrade_throughput", "threads": 1}
    for size in args.sizes:
        rates = [by_size[size]["tasks"][t]["degrade"] for t in tasks]
        summary[f"mean_{size}"] = round(sum(rates) / len(rates), 2)
        summary[f"min_{size}"] = round(min(rates), 2)
        summary[f"mean_encode_{size}"] = round(sum(by_size[size]["tasks"][t]["encode"] for t in tasks) / len(tasks), 2)
        summary[f"peak_mb_{size}"] = round(by_size[size]["peak_mb"], 1)
        summary[f"per_task_{size}"] = {t: round(by_size[size]["tasks"][t]["degrade"], 2) for t in tasks}
    print("-" * len(header))
    for key, target in TARGETS.items():
        if key in summary:
            better = summary[key] <= target if key.startswith("peak") else summary[key] >= target
            print(f"{key:<14} {summary[key]:>10} target {'≤' if key.startswith('peak') else '≥'} {target:<8} {'ok' if better else 'MISSED'}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train one stage of the restorer on Ray Train + DeepSpeed, then consolidate it for serving.

    python jobs/train.py --stage stage1 --preset tiny
    python jobs/train.py --stage stage2 --preset small --set train.stage2.steps=2000

Re-running with the same preset and run name resumes from the latest checkpoint.
Connects to the Ray cluster in RAY_ADDRESS (or --address); otherwise starts a local one.
"""

from __future__ import annotations

import argparse
import os
import sys

from realrestorer.config import ConfigError, add_config_arguments, load_config
from realrestorer.train.config import STAGES


def _summary(result: dict) -> str:
    from realrestorer.train.validate import score_table

    metrics = result["metrics"]
    lines = [
        f"stage {result['stage']} · run {result['run_name']} · {result['steps']} steps in {result['seconds']:.0f} s",
        f"model     {result['model_uri']}   (realrestorer restore {result['model_uri']} IMAGE… -o OUT --task TASK)",
        f"loss      {metrics.get('loss', float('nan')):.4f}   samples/s {metrics.get('samples_per_s', float('nan')):.1f}"
        + (f"   MFU {metrics['mfu']:.1%} ({metrics['mfu_6nt']:.1%} by 6·N·T)" if "mfu_6nt" in metrics else ""),
    ]
    return "\n".join([*lines, score_table(metrics)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", required=True, choices=STAGES, help="which training stage to run")
    add_config_arguments(parser, example="train.stage1.steps=50")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a new local Ray)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.preset, args.overrides)
        stage = cfg.train.stage(args.stage)
    except ConfigError as err:  # the user's own mistake: one line, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2

    import ray

    from realrestorer.train.stages import train_stage

    address = args.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        # Logical CPUs beyond the workers' share: Ray Data and the consolidation task need some too.
        num_cpus = max(os.cpu_count() or 1, stage.num_workers * stage.cpus_per_worker + 2)
        ray.init(num_cpus=num_cpus, include_dashboard=True)
    try:
        print(_summary(train_stage(cfg, args.stage)))
    except (ValueError, FileNotFoundError) as err:  # checked in the driver before any worker starts
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

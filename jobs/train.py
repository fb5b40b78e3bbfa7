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
    from realrestorer.degrade import TASKS

    metrics = result["metrics"]
    lines = [
        f"stage {result['stage']} · run {result['run_name']} · {result['steps']} steps in {result['seconds']:.0f} s",
        f"model     {result['model_uri']}",
        f"loss      {metrics.get('loss', float('nan')):.4f}   samples/s {metrics.get('samples_per_s', float('nan')):.1f}"
        + (f"   MFU {metrics['mfu']:.1%} ({metrics['mfu_6nt']:.1%} by 6·N·T)" if "mfu_6nt" in metrics else ""),
        f"{'group':<22}{'identity PSNR':>14}{'PSNR':>8}{'Δ dB':>8}{'SSIM':>8}",
    ]
    groups = sorted({k.split("/")[1] for k in metrics if k.startswith("val/")}, key=lambda g: (g == "mean", g))
    won = []
    for group in groups:
        base, psnr = metrics.get(f"identity/{group}/psnr", float("nan")), metrics[f"val/{group}/psnr"]
        lines.append(f"{group:<22}{base:>14.2f}{psnr:>8.2f}{psnr - base:>+8.2f}{metrics[f'val/{group}/ssim']:>8.3f}")
        if group != "mean" and psnr > base:
            won.append(group)
    parts = []
    for label, members in (("tasks", [g for g in groups if g in TASKS]),
                           ("other groups", [g for g in groups if g not in TASKS and g != "mean"])):
        if members:
            names = [g for g in members if g in won]
            parts.append(f"{len(names)} of {len(members)} {label} ({', '.join(names) or 'none'})")
    lines.append("beats the identity baseline on " + " and ".join(parts))
    return "\n".join(lines)


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

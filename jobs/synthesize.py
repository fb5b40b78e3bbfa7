"""Build the training and validation pairs: `python jobs/synthesize.py --preset tiny --set data.crops_per_image=8`.

Runs on the local machine or, with RAY_ADDRESS set, on a Ray cluster; only URIs
and resources change between the two.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from realrestorer.config import ConfigError, add_config_arguments, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Synthesize, filter and shard degraded/clean pairs (Ray Data).")
    add_config_arguments(parser, example="data.output=s3://bucket/pairs")
    parser.add_argument("--json", action="store_true", help="also print the summary as one JSON line")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.preset, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    import ray
    from realrestorer.data import build_dataset
    from realrestorer.data.report import format_summary

    ray.init(logging_level=logging.WARNING)
    try:
        summary = build_dataset(cfg)
    except (ValueError, FileNotFoundError) as err:  # bad input or a missing weight file: one line
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        ray.shutdown()
    print(format_summary(summary))
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

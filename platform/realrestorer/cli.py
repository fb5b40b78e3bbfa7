"""`realrestorer …`: the command line. Each command parses, calls one library function, prints a summary."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake prints one line instead of the whole usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _cmd_degrade(args: argparse.Namespace) -> int:
    import numpy as np

    from realrestorer.degrade import degrade
    from realrestorer.degrade.gallery import builtin_photo, gallery
    from realrestorer.imagefile import read_image, write_image

    if args.gallery is None and args.output is None:
        raise ValueError("say where to write the result: -o OUT.png (one task) or --gallery OUT.png")
    if args.gallery is None and args.image is None:
        raise ValueError("give an IMAGE to degrade (only --gallery has a built-in photo)")
    if not 0.0 <= args.severity <= 1.0:
        raise ValueError(f"--severity must be in [0, 1], got {args.severity}")
    image = read_image(args.image) if args.image else builtin_photo()
    if args.gallery is not None:
        sheet = gallery(image, seed=args.seed)
        path = write_image(args.gallery, sheet)
        print(f"wrote {path} ({sheet.shape[1]}×{sheet.shape[0]}): every task at three severities")
        return 0
    started = time.perf_counter()
    out, params = degrade(args.task, image, np.random.default_rng(args.seed), args.severity)
    path = write_image(args.output, out)
    print(f"wrote {path} ({out.shape[1]}×{out.shape[0]}, {args.task}, severity {args.severity}, "
          f"{(time.perf_counter() - started) * 1000:.0f} ms)")
    if args.params:
        try:
            Path(args.params).write_text(json.dumps(params, indent=2))
        except OSError as err:
            raise ValueError(f"--params {args.params}: cannot write ({err.strerror})") from None
        print(f"wrote {args.params}")
    return 0


def _cmd_tasks(args: argparse.Namespace) -> int:
    from realrestorer.degrade import EXTRA_TASKS, TASKS

    width = max(map(len, TASKS))
    for task, text in TASKS.items():
        print(f"{task:<{width}}  {text}")
    print(f"also: {', '.join(EXTRA_TASKS)} (degradations without a prompt of their own)")
    return 0


def _cmd_restore(args: argparse.Namespace) -> int:
    from realrestorer.degrade import TASKS
    from realrestorer.restore import restore_files

    summary = restore_files(args.model, args.inputs, args.output, TASKS[args.task] if args.task else args.prompt,
                            num_steps=args.steps, guidance=args.guidance, seed=args.seed, batch_size=args.batch,
                            device=args.device, overwrite=args.overwrite, keep_detail=args.keep_detail,
                            progress=not args.quiet)
    print("\n".join(summary.lines()))
    return 0 if summary.num_restored + summary.num_existing > 0 else 1


def _cmd_config(args: argparse.Namespace) -> int:
    import yaml

    from realrestorer.config import load_config

    cfg = load_config(args.preset, args.overrides)
    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from realrestorer.config import add_config_arguments
    from realrestorer.degrade import ALL_TASKS, TASKS

    parser = _Parser(prog="realrestorer", description="Real-world image restoration platform.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("degrade", help="degrade one image, or draw the gallery of every task",
                            description="Degrade an image with one task, or draw every task at three severities.")
    p.add_argument("image", nargs="?", help="input image (the gallery uses a built-in photo when omitted)")
    p.add_argument("--task", choices=ALL_TASKS, default="haze", help="degradation to apply (default: haze)")
    p.add_argument("--severity", type=float, default=0.5, help="strength in [0, 1] (default: 0.5)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("-o", "--output", help="where to write the degraded image")
    p.add_argument("--params", help="also write the recorded params as JSON here")
    p.add_argument("--gallery", metavar="OUT", help="write a labelled gallery of all tasks at three severities")
    p.set_defaults(run=_cmd_degrade)

    p = commands.add_parser(
        "restore", help="restore image files with a trained model",
        description="Restore images with a consolidated model (the `model` a training stage prints): each input "
                    "file, and each image under each input folder, is written to OUTPUT as a PNG (a folder's "
                    "images at their relative paths). Unreadable files are skipped and counted; outputs already "
                    "there are kept, so a run that was interrupted finishes when run again.")
    p.add_argument("model", metavar="MODEL", help="consolidated model directory or s3:// URI (holds model_card.json and dit/)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    p.add_argument("-o", "--output", required=True, help="folder for the restored PNGs (created if missing)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--task", choices=list(TASKS), help="restore this degradation with its fixed prompt")
    what.add_argument("--prompt", help="an instruction of your own instead of a task's prompt")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model card's)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance (default: the model card's)")
    p.add_argument("--seed", type=int, default=0, help="image k of the run samples with seed + k (default: 0)")
    p.add_argument("--batch", type=int, default=4, help="images per forward pass (default: 4)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: a GPU when visible)")
    p.add_argument("--keep-detail", action=argparse.BooleanOptionalAction, default=True,
                   help="add the input's detail finer than the model's working size back on top of the result "
                        "resized up from it (default: on; off gives the plain resize)")
    p.add_argument("--overwrite", action="store_true", help="restore images whose output already exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_cmd_restore)

    p = commands.add_parser("tasks", help="list the tasks and their fixed prompts", description="List the tasks and prompts.")
    p.set_defaults(run=_cmd_tasks)

    p = commands.add_parser("config", help="print a resolved config", description="Print a preset with overrides applied.")
    add_config_arguments(p)
    p.set_defaults(run=_cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    from realrestorer.model.weights import MissingWeightsError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, MissingWeightsError) as err:  # bad input from the user, or a missing weight file: one line
        print(f"realrestorer {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"realrestorer {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

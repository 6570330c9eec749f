"""The ``tubelet`` command line: parses arguments, then calls library functions.

Each command is one ``_cmd_*`` function and one entry in ``_build_parser``. Exit codes follow
INTERFACE.md: 0 success, 2 bad arguments / config / unreadable input (one line naming the
problem), 1 anything else.
"""

from __future__ import annotations

import argparse
import os
import sys


class UsageError(ValueError):
    """A problem with what the user asked for; printed as one line, exit code 2."""


def _cmd_models(args: argparse.Namespace) -> None:
    from tubelet.models.summary import print_model_table

    print_model_table(args.filter)


def _cmd_check_videos(args: argparse.Namespace) -> int:
    """Exit code 0 when every video decodes, 1 when some do not (listed in --out)."""
    from tubelet.data.check import check_videos, summary, video_paths, write_bad_list

    results = check_videos(video_paths(args.source), workers=args.workers)
    write_bad_list(results, args.out)
    print(summary(results, args.out))
    return 0 if all(result.ok for result in results) else 1


def _cmd_synth(args: argparse.Namespace) -> None:
    from tubelet.data.synthetic import write_synthetic_dataset

    dataset = write_synthetic_dataset(
        args.out, videos_per_class=args.videos_per_class, frames=args.frames, size=args.size, seed=args.seed
    )
    print(f"wrote {len(dataset.class_names)} classes x {args.videos_per_class} videos to {dataset.root}: "
          f"{dataset.train_list}, {dataset.val_list}, {dataset.classes_file}")


def _cmd_convert(args: argparse.Namespace) -> None:
    from tubelet.convert import load_foreign_model
    from tubelet.models.serialization import save_model

    model = load_foreign_model(args.source, args.source_format)
    save_model(model, args.out)
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.source} -> {args.out}: {model.config['architecture']}, {params / 1e6:.2f}M parameters, "
          f"{model.num_classes} classes")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tubelet", description="Video transformers: build, train, evaluate, predict.")
    commands = parser.add_subparsers(dest="command", required=True)

    models = commands.add_parser("models", help="list architectures with parameters and GFLOPs")
    models.add_argument("filter", nargs="?", default="", help="only names containing this text")
    models.set_defaults(run=_cmd_models)

    check = commands.add_parser(
        "check-videos",
        help="decode-check every video of a list or folder; exit 1 when some are bad",
        description="Decode the first, last and a few random frames of every video, in parallel. "
        "Writes 'path<TAB>reason' for each bad file to --out; exit code 0 when all decode, 1 when some do not.",
    )
    check.add_argument("source", metavar="LIST_OR_DIR", help="a video list (any format tubelet reads) or a folder")
    check.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel processes (default: all cores)")
    check.add_argument("--out", default="bad_videos.txt", help="where to write the bad files (default: bad_videos.txt)")
    check.set_defaults(run=_cmd_check_videos)

    synth = commands.add_parser(
        "synth",
        help="write a synthetic dataset of encoded videos",
        description="Write a synthetic video dataset (H.264 files, classes that need the order of frames "
        "and classes that need appearance only): OUT/videos/, OUT/train.csv, OUT/val.csv, OUT/classes.txt.",
    )
    synth.add_argument("out", metavar="OUT", help="folder to write into")
    synth.add_argument("--videos-per-class", type=int, default=40, help="videos per class, a quarter for validation (default: 40)")
    synth.add_argument("--frames", type=int, default=16, help="frames per video (default: 16)")
    synth.add_argument("--size", type=int, default=64, help="frame height and width in pixels, even (default: 64)")
    synth.add_argument("--seed", type=int, default=0, help="the same seed writes the same dataset (default: 0)")
    synth.set_defaults(run=_cmd_synth)

    convert = commands.add_parser(
        "convert",
        help="import weights from another implementation",
        description="Convert a checkpoint of another implementation into a tubelet model folder "
        "(model.safetensors + config.json, class names included). --from hf: a Hugging Face "
        "save_pretrained folder of TimesformerForVideoClassification, VivitForVideoClassification "
        "or VideoMAEForVideoClassification.",
    )
    convert.add_argument("source", metavar="SRC", help="the checkpoint folder to convert")
    convert.add_argument("--from", dest="source_format", required=True, metavar="FORMAT", help="its format: hf")
    convert.add_argument("--out", required=True, metavar="DST", help="the tubelet model folder to write")
    convert.set_defaults(run=_cmd_convert)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.run(args)
    except (UsageError, ValueError, FileNotFoundError) as error:
        print(f"tubelet {args.command}: error: {error}", file=sys.stderr)
        return 2
    return code or 0


if __name__ == "__main__":
    sys.exit(main())

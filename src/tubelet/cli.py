"""The ``tubelet`` command line: parses arguments, then calls library functions.

Each command is one ``_cmd_*`` function and one entry in ``_build_parser``. Exit codes follow
INTERFACE.md: 0 success, 2 bad arguments / config / unreadable input (one line naming the
problem), 1 anything else: one line too for a full disk or a diverging loss, a traceback only for
a bug; 130 when interrupted.

This module imports nothing heavy at the top: torch and the rest are imported inside the
command that needs them, after its arguments are checked, so that ``--help``, ``--version`` and
argument errors answer at once (tests/test_cli_startup.py holds the budget).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from tubelet import __version__


class UsageError(ValueError):
    """A problem with what the user asked for; printed as one line, exit code 2."""


def parse_views(text: str) -> tuple[int, int]:
    """``"2x3"`` -> ``(2, 3)``: temporal clips x spatial crops, both at least 1."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"views {text!r} must be TxS, e.g. 1x3 (temporal clips x spatial crops)")
    clips, crops = int(parts[0]), int(parts[1])
    if clips < 1 or crops < 1:
        raise argparse.ArgumentTypeError(f"views {text!r}: temporal clips T and spatial crops S must both be at "
                                         f"least 1, e.g. 1x3")
    if crops not in (1, 3):  # the crops tubelet.data.transforms makes (not imported here: start-up stays fast)
        raise argparse.ArgumentTypeError(f"views {text!r}: spatial crops S must be 1 (centre) or 3 (both ends and "
                                         f"centre of the long side)")
    return clips, crops


def _positive(kind: type) -> Callable[[str], int | float]:
    """An argparse type: a number of ``kind`` (int or float) greater than 0."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0:
            raise argparse.ArgumentTypeError(f"must be a positive {'integer' if kind is int else 'number'}, got {text!r}")
        return value

    return parse


def _undecodable_code(failed: int, total: int) -> int:
    """The exit code of a command that read ``total`` videos of which ``failed`` did not decode, the
    same for check-videos, eval and predict: 0 none, 1 some (the others were used, the bad ones are
    named), and a one-line error, exit code 2, when none could be used."""
    if total and failed == total:
        raise UsageError(f"{failed} of {total} videos could not be decoded (listed above)")
    return 1 if failed else 0


def _cmd_models(args: argparse.Namespace) -> None:
    from tubelet.models.summary import print_model_table

    print_model_table(args.filter)


def _cmd_check_videos(args: argparse.Namespace) -> int:
    """Exit code 0 when every video decodes, 1 when some do not (listed in --out), 2 when none does."""
    from tubelet.data.check import check_videos, summary, video_paths, write_bad_list

    results = check_videos(video_paths(args.source), workers=args.workers)
    write_bad_list(results, args.out)
    print(summary(results, args.out))
    return _undecodable_code(sum(not result.ok for result in results), len(results))


def _cmd_cache_frames(args: argparse.Namespace) -> int:
    """Exit code 0 when every video is cached, 1 when some failed (listed), 2 when none could be."""
    from tubelet.data.check import video_paths
    from tubelet.data.frame_cache import build_frame_cache, summary

    paths = [path for source in args.sources for path in video_paths(source)]
    results = build_frame_cache(paths, args.out, short_side=args.short_side, workers=args.workers)
    print(summary(results, args.out))
    return _undecodable_code(sum(r.status == "failed" for r in results), len(results))


def _cmd_synth(args: argparse.Namespace) -> None:
    from tubelet.data.synthetic import write_synthetic_dataset

    dataset = write_synthetic_dataset(
        args.out, videos_per_class=args.videos_per_class, frames=args.frames, size=args.size, seed=args.seed
    )
    print(f"wrote {len(dataset.class_names)} classes x {args.videos_per_class} videos to {dataset.root}: "
          f"{dataset.train_list}, {dataset.val_list}, {dataset.classes_file}")


def _cmd_convert(args: argparse.Namespace) -> None:
    from tubelet.bench.run import parse_overrides
    from tubelet.convert import load_foreign_model
    from tubelet.models.serialization import save_model

    model = load_foreign_model(args.source, args.source_format, num_frames=args.frames, img_size=args.size,
                               **parse_overrides(args.options))
    for line in model.init_report.lines() if hasattr(model, "init_report") else ():
        print(line, file=sys.stderr)
    save_model(model, args.out)
    params = sum(p.numel() for p in model.parameters())
    meta = model.metadata
    print(f"{args.source} -> {args.out}: {model.config['architecture']}, {params / 1e6:.2f}M parameters, "
          f"{model.num_classes} classes, input {meta.num_frames}x{meta.img_size}, test views {meta.views[0]}x{meta.views[1]}")


def _cmd_export(args: argparse.Namespace) -> None:
    from tubelet.engine.checkpoint import load_inference_model
    from tubelet.models.export import example_input, export_model

    model, _ = load_inference_model(args.checkpoint)
    path = export_model(model, args.out, args.format, batch=args.batch, dynamic_batch=not args.static_batch)
    shape = list(example_input(model, args.batch).shape)
    shape[0] = args.batch if args.static_batch else "B"
    print(f"{args.checkpoint} -> {path}: {args.format}, {model.config['architecture']}, input {shape}")


def _cmd_recipes(args: argparse.Namespace) -> None:
    from tubelet.engine.config import list_recipes

    recipes = list_recipes()
    width = max(len(name) for name, _ in recipes)
    for name, description in recipes:
        print(f"{name:<{width}}  {description}")


def _cmd_train(args: argparse.Namespace) -> None:
    if args.print_config:
        from tubelet.engine.config import describe_config

        rows = [(key, repr(value), source) for key, value, source in describe_config(args.recipe, args.overrides)]
        key_width, value_width = (max(len(row[i]) for row in rows) for i in (0, 1))
        for key, value, source in rows:
            print(f"{key:<{key_width}} = {value:<{value_width}}  # {source}")
        return
    recipe, overrides = args.recipe, list(args.overrides)
    if recipe is not None and "=" in recipe:  # `train --resume RUN key=value`: no recipe, only overrides
        recipe, overrides = None, [recipe, *overrides]
    run = args.out
    if args.resume:
        if isinstance(args.resume, str):
            if args.out is not None and os.path.abspath(args.out) != os.path.abspath(args.resume):
                raise UsageError(f"--resume {args.resume} and --out {args.out} name two run folders; give one")
            run = args.resume
        if run is None:
            raise UsageError("--resume needs the run folder: tubelet train --resume RUN")
        if recipe is not None:
            print(f"resuming {run} with its own config.yaml; the recipe {recipe} is not read again", file=sys.stderr)
    else:
        if recipe is None:
            raise UsageError("train needs a RECIPE (a name under recipes/ or a YAML path), or --resume RUN")
        if run is None:
            raise UsageError("train needs --out RUN, the folder for checkpoints, logs and plots")
        if args.allow_changes:
            raise UsageError("--allow-changes only applies with --resume")
    from tubelet.engine.report import format_report, run_report
    from tubelet.engine.train import train_from_recipe

    train_from_recipe(recipe, overrides, run, resume=bool(args.resume), allow_changes=args.allow_changes)
    print(f"training finished: {run}\n{format_report(run_report(run))}")


def _cmd_eval(args: argparse.Namespace) -> int:
    from tubelet.engine.evaluate import evaluate_checkpoint, format_metrics

    from tubelet.engine.graphs import CUDA_GRAPHS

    with CUDA_GRAPHS.using(args.cuda_graphs):
        result, written = evaluate_checkpoint(args.checkpoint, args.data, views=args.views, out=args.out,
                                              device=args.device, precision=args.precision)
    print(format_metrics(result))
    for path in written:
        print(f"wrote {path}")
    return _undecodable_code(len(result.failed), len(result.failed) + result.metrics["videos"])


def _cmd_predict(args: argparse.Namespace) -> int:
    if args.stride is not None and args.window is None:
        raise UsageError(f"--stride {args.stride:g} needs --window SECONDS (the sliding-window mode)")
    for video in args.videos:
        if not os.path.isfile(video):
            raise FileNotFoundError(f"video {video} does not exist")
    import json

    from tubelet.data.decode import DecodeError
    from tubelet.engine.graphs import CUDA_GRAPHS
    from tubelet.engine.predict import format_predictions, predict_checkpoint

    try:
        with CUDA_GRAPHS.using(args.cuda_graphs):
            results = predict_checkpoint(args.checkpoint, args.videos, views=args.views, topk=args.topk, window=args.window,
                                         stride=args.stride, device=args.device, precision=args.precision)
    except DecodeError as error:  # sliding windows: the video itself cannot be read
        raise UsageError(str(error)) from error
    if args.json:
        print(json.dumps(results, indent=2))
    elif args.window is not None:
        for result in results:
            print(f"{result['path']}:\n{format_predictions(result['segments'])}")
    else:
        print(format_predictions(results))
    return _undecodable_code(sum("error" in result for result in results), len(results))


def _cmd_demo(args: argparse.Namespace) -> None:
    from tubelet.engine.demo import run_demo

    run_demo(args.out)


def _cmd_bench(args: argparse.Namespace) -> None:
    from tubelet.bench import BenchConfig, command_line, markdown, run_bench, write_report
    from tubelet.bench.run import parse_overrides

    config = BenchConfig(
        models=tuple(args.models), frames=tuple(args.frames or ()), sizes=tuple(args.size or ()), batches=tuple(args.batch),
        mode=args.mode, device=args.device, dtype=args.dtype, reps=args.reps, warmup=args.warmup, compare=args.compare,
        compile=args.compile, cuda_graph=args.cuda_graph, overrides=parse_overrides(args.overrides),
        linear_backend=args.linear_backend, sdpa_backend=args.sdpa_backend,
        norm_backend=args.norm_backend, layout=args.layout,
    )
    result = run_bench(config, log=lambda line: print(line, file=sys.stderr, flush=True))
    command = command_line(config)
    print(markdown(result, command))
    for path in write_report(result, args.out, command) if args.out else ():
        print(f"wrote {path}")


def _add_device_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", metavar="DEVICE",
                        help="auto, cpu, cuda or cuda:N (default auto: the GPU when CUDA is available, else the CPU)")
    parser.add_argument("--precision", default="auto", metavar="DTYPE",
                        help="autocast to bf16, fp16 (GPU only) or fp32 (default auto: bf16 on a GPU, fp32 on the CPU)")
    parser.add_argument("--cuda-graphs", choices=("auto", "on", "off"), default="auto",
                        help="replay the model from CUDA graphs (one capture per batch shape): auto (default: batches "
                        "of at most 8 clips, views included, where launching kernels bounds the GPU), on (every "
                        "batch) or off")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tubelet", description="Video transformers: build, train, evaluate, predict.")
    parser.add_argument("--version", action="version", version=f"tubelet {__version__}")
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
    check.add_argument("--workers", type=_positive(int), default=os.cpu_count() or 1, help="parallel processes (default: all cores)")
    check.add_argument("--out", default="bad_videos.txt", help="where to write the bad files (default: bad_videos.txt)")
    check.set_defaults(run=_cmd_check_videos)

    cache = commands.add_parser(
        "cache-frames",
        help="decode videos once into a frame cache that training reads instead of the files",
        description="Decode every frame of each video once, scaled to --short-side, into --out (raw uint8, "
        "about N x H x W x 3 bytes a video); training with data.frame_cache=OUT reads its clips from there. "
        "Videos already cached and unchanged are kept. Exit code 0 when all are cached, 1 when some fail (listed).",
    )
    cache.add_argument("sources", nargs="+", metavar="LIST_OR_DIR", help="video lists (any format tubelet reads) or folders")
    cache.add_argument("--out", required=True, help="the cache folder (data.frame_cache)")
    cache.add_argument("--short-side", type=_positive(int), default=256,
                       help="frames' short side in pixels; smaller frames keep their size (default: 256)")
    cache.add_argument("--workers", type=_positive(int), default=os.cpu_count() or 1, help="parallel processes (default: all cores)")
    cache.set_defaults(run=_cmd_cache_frames)

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
        "or VideoMAEForVideoClassification; torchvision-mvit: a state dict file (.pth or .safetensors) "
        "of torchvision's mvit_v2_s; slowfast-mvit: a PySlowFast MViTv2 checkpoint (.pyth); timesformer: "
        "an official TimeSformer checkpoint (.pyth); xvit, lvt: an official XViT or Linear_VideoTransformer "
        "checkpoint (--set temporal_shift_div=8 for their Kinetics configs); scenic-vivit: a scenic ViViT tree as .npz (--set "
        "attention_type=factorized_dot_product_attention for model 4, img_size=N); timm: an image ViT "
        "(.pth, .npz, .safetensors) or an official image MViTv2 (.pyth) initialising --set model=NAME (and its "
        "constructor arguments).",
    )
    convert.add_argument("source", metavar="SRC", help="the checkpoint folder or file to convert")
    convert.add_argument("--from", dest="source_format", required=True, metavar="FORMAT",
                         help="its format: hf, torchvision-mvit, slowfast-mvit, timesformer, xvit, lvt, scenic-vivit or timm")
    convert.add_argument("--set", dest="options", nargs="+", default=[], metavar="key=value",
                         help="options of the format's loader (YAML values)")
    convert.add_argument("--out", required=True, metavar="DST", help="the tubelet model folder to write")
    convert.add_argument("--frames", type=_positive(int), metavar="T", help="rebuild for T frames (positional tables resized)")
    convert.add_argument("--size", type=_positive(int), metavar="S", help="rebuild for S x S pixels (positional tables resized)")
    convert.set_defaults(run=_cmd_convert)

    export = commands.add_parser(
        "export", help="export a model to ONNX or torch.export",
        description="Export a checkpoint, run folder (its best) or saved model for its input (frames and size "
        "from its metadata): --format onnx (opset 18, run by onnxruntime) or torch-export (a .pt2 file for "
        "torch.export.load). The model's metadata (class names, normalisation, views) goes into the file. "
        "The batch dimension is dynamic unless --static-batch.",
    )
    export.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint, a run folder (its best) or a saved model")
    export.add_argument("--format", required=True, choices=("onnx", "torch-export"), help="onnx or torch-export")
    export.add_argument("--out", required=True, metavar="FILE", help="the file to write (atomically)")
    export.add_argument("--batch", type=_positive(int), default=2, metavar="B", help="batch size of the example input (default: 2)")
    export.add_argument("--static-batch", action="store_true", help="fix the batch size to --batch")
    export.set_defaults(run=_cmd_export)

    train = commands.add_parser("train", help="train a recipe", description="Train a recipe (a file under "
                                "recipes/ or a path); key=value overrides any config field by its dotted name.")
    train.add_argument("recipe", nargs="?", metavar="RECIPE", help="recipe name under recipes/ or a YAML path")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. train.lr=0.01 model.depth=4")
    train.add_argument("--out", metavar="RUN", help="run folder: checkpoints, logs, plots")
    train.add_argument("--resume", nargs="?", const=True, metavar="RUN",
                       help="continue a run (RUN, or --out) from its newest checkpoint with its own config.yaml; "
                       "key=value given with it apply on top")
    train.add_argument("--allow-changes", action="store_true",
                       help="with --resume: accept overrides that change what is trained (epochs, lr, model, data)")
    train.add_argument("--print-config", action="store_true",
                       help="print every config key with its value and where it comes from, then exit")
    train.set_defaults(run=_cmd_train)

    recipes = commands.add_parser("recipes", help="list the recipes under recipes/ with what each trains")
    recipes.set_defaults(run=_cmd_recipes)

    evaluate = commands.add_parser("eval", help="multi-view evaluation of a checkpoint on a video list")
    evaluate.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint, a run folder (its best) or a saved model")
    evaluate.add_argument("--data", required=True, metavar="LIST", help="video list to evaluate on")
    evaluate.add_argument("--views", type=parse_views, metavar="TxS", help="temporal clips x spatial crops (default: the recipe's)")
    evaluate.add_argument("--out", metavar="FILE", help="write FILE.csv, FILE.json and FILE_confusion.png")
    _add_device_options(evaluate)
    evaluate.set_defaults(run=_cmd_eval)

    predict = commands.add_parser("predict", help="top-k classes of video files")
    predict.add_argument("videos", nargs="+", metavar="VIDEO")
    predict.add_argument("--checkpoint", required=True, help="a checkpoint, a run folder (its best) or a saved model")
    predict.add_argument("--views", type=parse_views, metavar="TxS", help="temporal clips x spatial crops (default: the recipe's)")
    predict.add_argument("--topk", type=_positive(int), default=5, metavar="K")
    predict.add_argument("--json", action="store_true", help="print JSON instead of text")
    predict.add_argument("--window", type=_positive(float), metavar="SECONDS", help="sliding-window mode: segment length")
    predict.add_argument("--stride", type=_positive(float), metavar="SECONDS", help="sliding-window step (default: --window)")
    _add_device_options(predict)
    predict.set_defaults(run=_cmd_predict)

    bench = commands.add_parser(
        "bench", help="throughput, latency, memory, FLOPs and MFU, optionally beside transformers",
        description="Time models over frames x sizes x batch sizes (inference or a training step): videos/s, "
        "latency, peak memory, parameters, FLOPs and GMACs per clip, MFU against a matrix-multiply peak measured "
        "in the same run. An out-of-memory cell is reported, not fatal. Prints a markdown table; --out also "
        "writes bench.md, bench.json and bench.png (throughput and memory against frames).",
    )
    bench.add_argument("models", nargs="+", metavar="MODEL", help="registered architecture names (`tubelet models`)")
    bench.add_argument("--frames", type=_positive(int), nargs="+", metavar="T", help="frame counts (default: each model's)")
    bench.add_argument("--size", type=_positive(int), nargs="+", metavar="S", help="frame sizes in pixels (default: each model's)")
    bench.add_argument("--batch", type=_positive(int), nargs="+", default=[1], metavar="B", help="batch sizes (default: 1)")
    bench.add_argument("--mode", choices=("infer", "train"), default="infer", help="inference, or a training step with AdamW")
    bench.add_argument("--compare", action="store_true", help="also run the same architecture from transformers, same weights")
    bench.add_argument("--compile", nargs="?", const="default", metavar="MODE", help="torch.compile every model (mode: default, max-autotune, ...)")
    bench.add_argument("--cuda-graph", action="store_true", help="inference: capture each step in a CUDA graph, time its replays")
    bench.add_argument("--device", default="auto", help="cpu, cuda or cuda:N (default: cuda when there is one)")
    bench.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto", help="bf16 autocast or float32 (default: bf16 on cuda)")
    bench.add_argument("--reps", type=_positive(int), default=10, help="timed steps per cell, the median is reported (default: 10)")
    bench.add_argument("--warmup", type=_positive(int), default=3, help="untimed steps first (default: 3)")
    bench.add_argument("--linear-backend", metavar="NAME", help="linear attention implementation: torch or triton")
    bench.add_argument("--sdpa-backend", metavar="NAME", help="softmax attention kernel: auto, flash, cudnn, efficient, math or triton")
    bench.add_argument("--norm-backend", metavar="NAME", help="LayerNorm under autocast: auto (default: triton for CUDA inputs of at least 4.2M values in inference), torch, or triton (Triton kernels with a 16-bit output, forward and backward)")
    bench.add_argument("--layout", metavar="NAME", help="attention's groups of tokens: auto (default: view for large steps), permute (copies) or view (strided views)")
    bench.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="key=value", help="constructor arguments of every model")
    bench.add_argument("--out", metavar="DIR", help="write DIR/bench.md, DIR/bench.json and DIR/bench.png")
    bench.set_defaults(run=_cmd_bench)

    demo = commands.add_parser("demo", help="synthesise data, train, evaluate, predict: what `make demo` runs")
    demo.add_argument("--out", default="demo_run", metavar="DIR", help="where to put everything (default: demo_run)")
    demo.set_defaults(run=_cmd_demo)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help and --version (0), argument errors (2): argparse has printed them
        return stop.code
    try:
        code = args.run(args)
    except (UsageError, ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as error:
        print(f"tubelet {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (OSError, FloatingPointError) as error:  # a full disk, a lost mount, a diverging loss: not the input
        print(f"tubelet {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"tubelet {args.command}: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as error:
        from tubelet.data.decode import DecodeError
        from tubelet.data.failures import TooManyDecodeFailures

        if isinstance(error, TooManyDecodeFailures):  # training saw more undecodable videos than data.max_decode_failures
            print(f"tubelet {args.command}: error: {error}", file=sys.stderr)
            return 2
        if not isinstance(error, DecodeError):
            raise
        # unreadable training videos; from a DataLoader worker the message ends with the error's own line
        line = str(error).strip().splitlines()[-1].removeprefix(f"{DecodeError.__module__}.DecodeError: ")
        print(f"tubelet {args.command}: error: {line}", file=sys.stderr)
        return 2
    return code or 0


if __name__ == "__main__":
    sys.exit(main())

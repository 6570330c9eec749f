"""The ``tubelet`` command line: parses arguments, then calls library functions.

Each command is one ``_cmd_*`` function and one entry in ``_build_parser``. Exit codes follow
INTERFACE.md: 0 success, 2 bad arguments / config / unreadable input (one line naming the
problem), 1 anything else.
"""

from __future__ import annotations

import argparse
import sys


class UsageError(ValueError):
    """A problem with what the user asked for; printed as one line, exit code 2."""


def _cmd_models(args: argparse.Namespace) -> None:
    from tubelet.models.summary import print_model_table

    print_model_table(args.filter)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tubelet", description="Video transformers: build, train, evaluate, predict.")
    commands = parser.add_subparsers(dest="command", required=True)

    models = commands.add_parser("models", help="list architectures with parameters and GFLOPs")
    models.add_argument("filter", nargs="?", default="", help="only names containing this text")
    models.set_defaults(run=_cmd_models)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (UsageError, ValueError, FileNotFoundError) as error:
        print(f"tubelet {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

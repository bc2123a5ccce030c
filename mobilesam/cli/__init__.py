"""`mobilesam` command line: parse arguments, call the library, print or save. One module per
group of commands adds its parsers and runs them; this one builds the parser and runs
the command, turning the library's errors into one line and an exit code."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..errors import MobileSAMError
from . import distill, evaluate, export, labels, segment, tools


def build_parser() -> argparse.ArgumentParser:
    # No abbreviations: `--box 0.5` must not be taken for `--box-nms-thres 0.5`.
    parser = argparse.ArgumentParser(
        prog="mobilesam", description="MobileSAM: fast Segment Anything.", allow_abbrev=False
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"mobilesam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for commands in (segment, labels, evaluate, export, distill, tools):
        commands.add_parsers(sub)
    return parser


def _join_negative_values(argv: list[str]) -> list[str]:
    """`--box -50,-50,100,100` -> `--box=-50,-50,100,100`: argparse takes a value that starts
    with '-' and is not a plain number for an option, so clipping a box that sticks out
    past the top-left corner could not be asked for."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in ("--box", "--point") and arg[:1] == "-" and arg[1:2].isdigit():
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = _join_negative_values(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # `mobilesam weights list | head`: the reader left, nothing to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except MobileSAMError as exc:
        print(f"mobilesam: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the user gave: unreadable, unwritable, disk full
        print(f"mobilesam: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mobilesam: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise
        print(
            f"mobilesam: error: `mobilesam {args.command}` needs PyTorch: pip install 'mobilesam[torch]' "
            "(CPU-only machines: install torch from https://download.pytorch.org/whl/cpu first)",
            file=sys.stderr,
        )
        return 2

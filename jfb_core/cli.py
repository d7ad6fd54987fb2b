"""Command line: ``python -m jfb_core {info,prepare,train,evaluate,bench} ...``.

The command line is where progress is printed; the library itself never prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

from jfb_core.config import PRESETS

COMMANDS = {
    "info": "show versions, device and the active preset",
    "prepare": "decode and resize a CelebA folder once into a compact cache",
    "train": "train DE-GRAD (JFB, IFT, Neumann or unrolled backward)",
    "evaluate": "PSNR/SSIM of reconstructions on a data split",
    "bench": "timing and memory benchmarks, written as JSON with provenance",
}


def _add_preset(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="scale preset (default: $JFB_PRESET, else 'fast')")


def _cmd_info(args: argparse.Namespace) -> int:
    from jfb_core.config import get_preset
    from jfb_core.provenance import environment_info

    preset = get_preset(args.preset)
    print(json.dumps({"environment": environment_info(), "preset": preset.to_dict()}, indent=2))
    return 0


def _not_yet(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        print(f"jfb_core {name}: not implemented yet in this version of the course.",
              file=sys.stderr)
        return 2

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jfb_core",
        description="Implicit networks for deblurring with Jacobian-free backpropagation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {"info": _cmd_info}
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _add_preset(p)
        p.set_defaults(func=handlers.get(name, _not_yet(name)))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

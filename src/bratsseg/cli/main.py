"""The `bratsseg` command: the parser, logging and error reporting only.

Each command group is a module of this package (``data``, ``training``, ``workflow``, ``inference``, ``evaluation``,
``viewing``, ``compression``) holding each command's parser beside its handler; a handler calls one library
function by keyword. Heavy imports happen inside the handlers so that `bratsseg --help` is instant.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from bratsseg.errors import BratsSegError
from bratsseg.extras import require

log = logging.getLogger("bratsseg")

#: commands that need more than the runtime install (``predict``, ``info``, ``evaluate``, ``view``, ``report``,
#: ``synth``, ``preprocess`` and ``compare`` run on numpy, nibabel and ONNX Runtime alone)
NEEDS_TRAIN_EXTRA: dict[str, tuple[str, ...]] = {
    "demo": ("torch", "monai", "matplotlib", "yaml"),
    "train": ("torch", "yaml"),
    "crossval": ("torch", "yaml"),
    "bundle": ("torch", "onnx", "yaml"),
    "sweep": ("torch",),
    "export": ("torch", "onnx"),
    "prune": ("torch",),
    "quantize": ("torch", "onnx"),
    "compress": ("torch", "onnx", "matplotlib"),
    "plot": ("matplotlib",),
}


def build_parser() -> argparse.ArgumentParser:
    from bratsseg import __version__

    parser = argparse.ArgumentParser(
        prog="bratsseg", description="Brain-tumour segmentation of BraTS-format MRI with small, fast U-Nets."
    )
    parser.add_argument("--version", action="version", version=f"bratsseg {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from bratsseg.cli import compression, data, evaluation, inference, training, viewing, workflow

    # one module per command group, each parser beside its handler; listed in the order of the work
    for group in (training, data, workflow, inference, evaluation, viewing, compression):
        group.add_parsers(sub)
    return parser


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM ends the command like Ctrl-C does, so temporary files are removed on the way out."""
    raise KeyboardInterrupt


def _interrupted_message(err: KeyboardInterrupt, args: argparse.Namespace) -> str:
    """What Ctrl-C kept and the exact command that goes on."""
    from bratsseg.engine.trainer import TrainingInterrupted

    if not isinstance(err, TrainingInterrupted):
        return "interrupted"
    return f"interrupted: {err}. Go on with:\n  {_resume_command(args)}"


def _resume_command(args: argparse.Namespace) -> str:
    """The command line that goes on with this one's training (``train`` gains ``--resume``)."""
    import shlex

    argv = list(getattr(args, "argv", None) or sys.argv[1:])
    if args.command == "train" and "--resume" not in argv:
        argv.append("--resume")
    return f"bratsseg {shlex.join(argv)}"


def _os_error_message(err: OSError, args: argparse.Namespace) -> str:
    """One line for an operating-system error, and for a training how to go on once it is fixed."""
    where = f": {err.filename}" if err.filename else ""
    text = f"error: {err.strerror or err}{where}"
    if args.command in ("train", "crossval"):
        text += f" (the last complete checkpoint is intact; fix this, then: {_resume_command(args)})"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    if getattr(args, "metric", "") is None:
        args.metric = "dice" if args.kind == "boxplot" else "iou"
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        require(f"bratsseg {args.command}", *NEEDS_TRAIN_EXTRA.get(args.command, ()))
        return int(args.func(args))
    except BratsSegError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a full disk, a read-only folder, a file that vanished: one line, nothing lost
        print(_os_error_message(err, args), file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        print(_interrupted_message(err, args), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

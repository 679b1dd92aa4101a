"""Result blocks in the documentation, rendered from the JSON that measured them: never a number typed by hand.

A script that measures (a benchmark, a cross-validation study) writes its JSON, renders a Markdown block from it and,
with ``--write``, replaces the block between its markers in a Markdown file (:func:`measured_block_main`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def named_path(text: str) -> tuple[str, Path]:
    """A script's ``NAME=PATH`` argument (argparse ``type=``): the name may hold ``=``, the path may not."""
    import argparse

    name, sep, path = text.rpartition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def replace_block(text: str, block: str, begin: str, end: str) -> str:
    """``text`` with the part from ``begin`` to ``end`` (markers included) replaced by ``block``."""
    if begin not in text or end not in text:
        raise SystemExit(f"the page has no block between {begin!r} and {end!r}")
    head, rest = text.split(begin, 1)
    return head + block + rest.split(end, 1)[1]


def measured_block_main(
    parser: Any,
    measure: Callable[[Any], dict[str, Any]],
    render: Callable[[dict[str, Any]], str],
    json_default: Path,
    begin: str,
    end: str,
) -> int:
    """The shared command line of the benchmarks whose results the documentation shows: measure into ``--json``
    (or, with ``--render``, only read it), render the block, and with ``--write`` replace it in that page."""
    import json

    parser.add_argument("--json", type=Path, default=json_default, help="where the measurements go")
    parser.add_argument("--render", action="store_true", help="only render the block from --json")
    parser.add_argument("--write", type=Path, help="the documentation page whose block is replaced")
    args = parser.parse_args()
    if not args.render:
        result = measure(args)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    block = render(json.loads(args.json.read_text()))
    if args.write:
        args.write.write_text(replace_block(args.write.read_text(), block, begin, end))
    print(block)
    return 0

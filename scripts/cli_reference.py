"""The command reference page, rendered from the CLI's own parsers: every command and option, never typed by hand.

    python scripts/cli_reference.py --write docs/reference/cli.md     # replace the block between the markers
    python scripts/cli_reference.py                                   # print it

``tests/test_docs.py`` checks that the page's block is what this renders, so a new option cannot go undocumented.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

BEGIN = "<!-- cli-reference: begin (scripts/cli_reference.py --write docs/reference/cli.md) -->"
END = "<!-- cli-reference: end -->"
WIDTH = "100"  # argparse wraps at $COLUMNS: fixed, so the page does not depend on the terminal


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps its sub-parsers here and nowhere public
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def render() -> str:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        from bratsseg.cli.main import build_parser

        parser = build_parser()
        lines = [BEGIN, "", "```text", parser.format_help().rstrip(), "```", ""]
        for name, sub in subcommands(parser).items():
            lines += [f"## bratsseg {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
        lines.append(END)
        return "\n".join(lines)
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", type=Path, help="the page whose block is replaced")
    args = p.parse_args()
    block = render()
    if args.write is None:
        print(block)
        return 0
    from bratsseg.docblocks import replace_block

    args.write.write_text(replace_block(args.write.read_text(), block, BEGIN, END))
    return 0


if __name__ == "__main__":
    sys.exit(main())

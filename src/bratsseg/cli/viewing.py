"""`bratsseg view`, `report` and `plot`: look at cases and results."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def cmd_view(args: argparse.Namespace) -> int:
    import time
    import webbrowser

    from bratsseg.viewer.server import build_page, start_server

    page = build_page(args.case, args.pred, truth=args.truth)
    server, url = start_server(page, args.port)
    print(f"{page.title}: {url}  (serving only this case's files on 127.0.0.1; Ctrl-C stops it)", flush=True)
    if not args.no_browser:
        webbrowser.open(url)
    try:
        while True:
            time.sleep(3600)
    finally:
        server.shutdown()


def cmd_report(args: argparse.Namespace) -> int:
    from bratsseg.viewer.report import write_report

    print(write_report(args.results, args.output))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from bratsseg.viz import plots

    if args.kind == "sweep":
        out = plots.plot_sweeps(args.inputs, args.output, args.metric)
    elif args.kind == "boxplot":
        out = plots.plot_boxplots(args.inputs, args.output, args.metric)
    elif args.kind == "training":
        out = plots.plot_training(args.inputs[0], args.output)
    else:
        pred = args.inputs[1] if len(args.inputs) > 1 else None
        out = plots.plot_case(args.inputs[0], args.output, pred, args.slice)
    print(out)
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("view", help="look at a case and its labels in 3-D in the browser (NiiVue, offline)")
    p.add_argument("case", type=Path, help="a case folder (its four modalities, and its segmentation if any)")
    p.add_argument("--pred", type=Path, help="a predicted label map, or a folder holding <case_id>.nii.gz")
    p.add_argument("--truth", action="store_true", help="show the case's segmentation too (beside the prediction)")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--no-browser", action="store_true", help="print the URL only")
    p.set_defaults(func=cmd_view)

    p = sub.add_parser("report", help="one self-contained HTML page of a results folder (evaluate, compress, demo)")
    p.add_argument("results", type=Path, help="a folder of bratsseg results")
    p.add_argument("-o", "--output", type=Path, help="the HTML file (default RESULTS/report.html)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("plot", help="figures from results files (no network is run)")
    p.add_argument(
        "kind",
        choices=["sweep", "boxplot", "training", "case"],
        help="sweep: SWEEP_DIR...; boxplot: EVAL_DIR...; training: RUN; case: CACHE/CASE [PRED]",
    )
    p.add_argument("inputs", type=Path, nargs="+")
    p.add_argument("-o", "--output", type=Path, required=True, help="PNG file")
    p.add_argument("--metric", default=None, help="iou or dice (sweep), a per_case.csv column (boxplot)")
    p.add_argument("--slice", type=int, help="axial slice for `case` (default: most tumour)")
    p.set_defaults(func=cmd_plot)

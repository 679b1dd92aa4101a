"""`bratsseg report RESULTS_DIR`: one self-contained HTML page of a results folder.

It gathers what bratsseg wrote under the folder: a ``report.md`` (the demo's), every ``evaluate`` result
(``summary.json`` + ``per_case.csv``: the mean table and the per-case table, each case linked to its predicted label
map where the folder holds one and given the ``bratsseg view`` command that shows it), every ``compress`` result
(``compress.json``: the table and its Pareto figure), and the figures. Images are embedded (base64), styles are
inline: the page opens from disk, offline, and can be mailed as one file.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
from pathlib import Path
from typing import Any

from bratsseg.atomic import write_text_atomic
from bratsseg.errors import BratsSegError
from bratsseg.labels import REGIONS

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 1100px; margin: 24px auto; padding: 0 16px; color: #222; }
table { border-collapse: collapse; margin: 10px 0 18px; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; }
img { max-width: 100%; border: 1px solid #ddd; margin: 6px 0; }
code, pre { background: #f6f6f6; padding: 1px 4px; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 3px; margin-top: 32px; }
"""


def _img(path: Path, alt: str = "") -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)


def markdown_to_html(text: str, base: Path) -> tuple[str, set[Path]]:
    """The subset of Markdown bratsseg writes (headings, paragraphs, lists, pipe tables, images, code spans) as
    HTML, with images embedded; and the image files it embedded."""
    out: list[str] = []
    used: set[Path] = set()
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line:
            i += 1
            continue
        if m := re.fullmatch(r"(#{1,4}) (.*)", line):
            level = len(m.group(1))
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
        elif m := re.fullmatch(r"!\[([^\]]*)\]\(([^)]+)\)", line):
            path = (base / m.group(2)).resolve()
            if path.is_file():
                used.add(path)
                out.append(_img(path, m.group(1)))
        elif line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                    block.append(cells)
                i += 1
            out.append(_table(block[0], [[_inline(c) for c in r] for r in block[1:]]))
            continue
        elif line.startswith(("- ", "* ")):
            items = []
            while i < len(lines) and lines[i].startswith(("- ", "* ")):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        else:
            para = [line]
            while i + 1 < len(lines) and lines[i + 1].strip() and not lines[i + 1].startswith(("#", "|", "!", "- ")):
                i += 1
                para.append(lines[i].rstrip())
            out.append(f"<p>{_inline(' '.join(para))}</p>")
        i += 1
    return "\n".join(out), used


def _evaluate_section(folder: Path, root: Path) -> str:
    from bratsseg.metrics.tables import read_per_case

    summary = json.loads((folder / "summary.json").read_text())
    metrics = summary["metrics"]
    names = ("dice", "iou", "hd95", "sensitivity", "specificity")
    mean_rows = [[r, *(f"{metrics[r][k]['mean']:.3f}" for k in names)] for r in metrics]
    parts = [
        f"<h2>Evaluation: {html.escape(str(folder.relative_to(root)) or '.')}</h2>",
        f"<p>{summary.get('n_cases', '?')} case(s); empty-mask policy {html.escape(str(summary.get('policy')))}"
        + (f"; model <code>{html.escape(str(summary['model']))}</code>" if "model" in summary else "")
        + "</p>",
        _table(["region", "Dice", "IoU", "HD95 mm", "sensitivity", "specificity"], mean_rows),
    ]
    per_case = folder / "per_case.csv"
    if per_case.is_file():
        rows = read_per_case(per_case)
        by_case: dict[str, dict[str, Any]] = {}
        for row in rows:
            by_case.setdefault(str(row["case_id"]), {})[str(row["region"])] = row
        recorded = summary.get("info", {}).get("pred_dir") or summary.get("pred_dir")
        predictions = _find_predictions(folder, root, recorded)
        table = []
        for case_id, regions in by_case.items():
            cell = html.escape(case_id)
            pred = predictions.get(case_id)
            if pred is not None:
                link = Path(os.path.relpath(pred.resolve(), root.resolve())).as_posix()  # beside the results too
                cell = f'<a href="{html.escape(link)}">{cell}</a>'
            table.append([cell, *(_number(regions.get(r, {}).get("dice")) for r in REGIONS)])
        parts.append(_table(["case (link: its label map)", *(f"Dice {r}" for r in REGIONS)], table))
        if predictions:
            parts.append(
                "<p>To look at a case in 3-D with its truth: <code>bratsseg view CASE_FOLDER --pred "
                f"{html.escape(str(next(iter(predictions.values())).parent))} --truth</code></p>"
            )
    return "\n".join(parts)


def _number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else html.escape(str(value if value is not None else "-"))


def _find_predictions(folder: Path, root: Path, recorded: str | None = None) -> dict[str, Path]:
    """``<case_id>.nii.gz`` label maps: in the folder the evaluation recorded (``evaluate --pred``), else in a
    ``predictions`` folder beside or above the evaluation."""
    candidates = [folder / "predictions", folder.parent / "predictions", root / "predictions"]
    if recorded:
        candidates.insert(0, Path(recorded))
    for candidate in candidates:
        if candidate.is_dir():
            return {p.name[: -len(".nii.gz")]: p for p in sorted(candidate.glob("*.nii.gz"))}
    return {}


def _compress_section(path: Path, root: Path) -> tuple[str, set[Path]]:
    data = json.loads(path.read_text())
    rows = data.get("rows", [])
    if not rows:
        return "", set()
    from bratsseg.metrics.tables import compression_markdown

    parts = [f"<h2>Compression study: {html.escape(str(path.parent.relative_to(root)) or '.')}</h2>"]
    parts.append(markdown_to_html(compression_markdown(rows), root)[0])
    parts.append("<p>Every column, IoU and HD95 included: <code>compress.csv</code> beside it.</p>")
    used = set()
    pareto = path.parent / "pareto.png"
    if pareto.is_file():
        used.add(pareto.resolve())
        parts.append(_img(pareto, "Pareto front"))
    return "\n".join(parts), used


def write_report(results: str | Path, out: str | Path | None = None) -> Path:
    """Write ``results/report.html`` (or ``out``) from what the results folder holds; returns its path."""
    root = Path(results)
    if not root.is_dir():
        raise BratsSegError("no such results folder", root)
    sections: list[str] = []
    used: set[Path] = set()
    md = root / "report.md"
    if md.is_file():
        body, images = markdown_to_html(md.read_text(), root)
        sections.append(body)
        used |= images
    for summary in sorted(root.rglob("summary.json")):
        try:
            if "metrics" in json.loads(summary.read_text()):
                sections.append(_evaluate_section(summary.parent, root))
        except (ValueError, KeyError, TypeError):
            continue
    for study in sorted(root.rglob("compress.json")):
        body, images = _compress_section(study, root)
        sections.append(body)
        used |= images
    figures = [p for p in sorted(root.rglob("*.png")) if p.resolve() not in used]
    if figures:
        sections.append("<h2>Figures</h2>")
        sections += [
            f"<p><code>{html.escape(str(p.relative_to(root)))}</code><br>{_img(p, p.name)}</p>" for p in figures
        ]
    if not any(s.strip() for s in sections):
        raise BratsSegError("no bratsseg results here (report.md, summary.json, compress.json or figures)", root)
    title = "bratsseg report" if md.is_file() else f"bratsseg report: {root.name}"
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(sections) + "\n</body></html>\n"
    )
    target = Path(out) if out is not None else root / "report.html"
    write_text_atomic(target, page)
    return target

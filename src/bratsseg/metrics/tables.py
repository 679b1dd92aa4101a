"""Per-case metric rows, their summary, and the results files (``per_case.csv``, ``summary.json``)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from bratsseg.errors import BratsSegError
from bratsseg.labels import REGIONS
from bratsseg.metrics.distance import hd95
from bratsseg.metrics.overlap import Counts, overlap_metrics

if TYPE_CHECKING:
    from bratsseg.metrics.lesion import LesionRules

METRICS = ("dice", "iou", "hd95", "sensitivity", "specificity")
#: BraTS 2023+ lesion-wise metrics (:mod:`bratsseg.metrics.lesion`); NaN / empty where not computed.
LESION_METRICS = ("lesion_dice", "lesion_hd95", "lesion_tp", "lesion_fp", "lesion_fn")
COLUMNS = ("case_id", "region", "threshold", "tp", "fp", "fn", "tn", *METRICS, *LESION_METRICS)
SUMMARIZED = (*METRICS, *LESION_METRICS)


def _number(value: Any) -> float:
    return math.nan if value in ("", None) else float(value)


def case_rows(
    case_id: str,
    pred: NDArray[Any],
    truth: NDArray[Any],
    spacing: Sequence[float],
    total_voxels: int | None = None,
    policy: str = "brats",
    thresholds: dict[str, float] | None = None,
    with_hd95: bool = True,
    lesion: LesionRules | None = None,
) -> list[dict[str, Any]]:
    """One row per region: confusion counts (so any metric can be recomputed) and the metrics; with ``lesion``
    rules, the lesion-wise metrics too (else their columns are empty)."""
    from bratsseg.metrics.lesion import lesion_scores

    rows = []
    for r, name in enumerate(REGIONS):
        counts = Counts.of(pred[r], truth[r], total_voxels)
        row: dict[str, Any] = {"case_id": case_id, "region": name}
        row["threshold"] = thresholds[name] if thresholds else ""
        row.update(tp=counts.tp, fp=counts.fp, fn=counts.fn, tn=counts.tn)
        row.update(overlap_metrics(counts, policy))
        row["hd95"] = hd95(pred[r], truth[r], spacing, policy) if with_hd95 else math.nan
        row.update(
            lesion_scores(pred[r], truth[r], spacing, lesion).row() if lesion else dict.fromkeys(LESION_METRICS, "")
        )
        rows.append(row)
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean, std, median and count of every metric per region (NaNs left out)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in REGIONS:
        out[name] = {}
        for m in SUMMARIZED:
            values = np.array([_number(r.get(m)) for r in rows if r["region"] == name], dtype=float)
            values = values[~np.isnan(values)]
            if m in LESION_METRICS and not values.size:
                continue  # not computed for these rows
            out[name][m] = {
                "mean": float(values.mean()) if values.size else math.nan,
                "std": float(values.std()) if values.size else math.nan,
                "median": float(np.median(values)) if values.size else math.nan,
                "n": int(values.size),
            }
    return out


@dataclass(frozen=True)
class EvaluationSummary:
    """What ``evaluate`` found: ``metrics[region][metric]`` = ``{"mean", "std", "median", "n"}`` over the cases,
    the mean Dice over the regions (and lesion-wise Dice where computed), and ``info``: how it was computed
    (policy, thresholds, post-processing, model, lesion-wise rules, network seconds per case, problems ...).
    Written as ``summary.json`` (:meth:`to_dict`) and read back with :meth:`read`."""

    n_cases: int
    metrics: dict[str, dict[str, dict[str, float]]]
    mean_dice: float
    mean_lesion_dice: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)  # per case and region (not written in the JSON)

    @classmethod
    def of(cls, rows: list[dict[str, Any]], info: dict[str, Any]) -> EvaluationSummary:
        metrics = summarize(rows)
        lesion = all("lesion_dice" in metrics[r] for r in REGIONS)
        return cls(
            n_cases=len({r["case_id"] for r in rows}),
            metrics=metrics,
            mean_dice=float(np.nanmean([metrics[r]["dice"]["mean"] for r in REGIONS])) if rows else math.nan,
            mean_lesion_dice=float(np.mean([metrics[r]["lesion_dice"]["mean"] for r in REGIONS])) if lesion else None,
            info=dict(info),
            rows=rows,
        )

    def dice(self, region: str) -> float:
        """Mean Dice of ``region`` over the cases."""
        return float(self.metrics[region]["dice"]["mean"])

    @property
    def policy(self) -> str:
        return str(self.info.get("policy", "brats"))

    @property
    def problems(self) -> list[str]:
        return list(self.info.get("problems", []))

    def to_dict(self) -> dict[str, Any]:
        out = {**self.info, "n_cases": self.n_cases, "metrics": self.metrics, "mean_dice": self.mean_dice}
        if self.mean_lesion_dice is not None:
            out["mean_lesion_dice"] = self.mean_lesion_dice
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str | Path | None = None) -> EvaluationSummary:
        try:
            info = {k: v for k, v in data.items() if k not in ("n_cases", "metrics", "mean_dice", "mean_lesion_dice")}
            return cls(int(data["n_cases"]), data["metrics"], float(data["mean_dice"]), data.get("mean_lesion_dice"),
                       info)  # fmt: skip
        except (KeyError, TypeError, ValueError) as err:
            raise BratsSegError(f"not an evaluation summary ({err})", where) from None

    @classmethod
    def read(cls, path: str | Path) -> EvaluationSummary:
        """A results folder's ``summary.json`` (or the file itself)."""
        path = Path(path)
        f = path / "summary.json" if path.is_dir() else path
        try:
            return cls.from_dict(json.loads(f.read_text()), f)
        except (OSError, ValueError) as err:
            raise BratsSegError(f"cannot read results ({err})", f) from err


def write_results(out_dir: str | Path, rows: list[dict[str, Any]], info: dict[str, Any]) -> EvaluationSummary:
    """Write ``per_case.csv`` and ``summary.json`` (with ``info``: policy, model, thresholds ...)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "per_case.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    summary = EvaluationSummary.of(rows, info)
    (out / "summary.json").write_text(json.dumps(summary.to_dict(), indent=1))
    return summary


def read_per_case(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``per_case.csv`` with numbers parsed."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for k in ("tp", "fp", "fn", "tn"):
            row[k] = int(row[k])
        for k in SUMMARIZED:
            row[k] = _number(row.get(k))  # older files have no lesion columns
    return rows


def compare_table(summaries: dict[str, dict[str, Any]]) -> str:
    """One plain-text table of several ``summary.json`` results: whole-region Dice and IoU per region, the
    lesion-wise Dice and HD95 (BraTS 2023+; ``-`` where not computed), parameters, time."""
    head = ["result", "dims", "params", *(f"Dice {r}" for r in REGIONS), *(f"IoU {r}" for r in REGIONS)]
    head += [*(f"LW Dice {r}" for r in REGIONS), *(f"LW HD95 {r}" for r in REGIONS)]
    head += ["mean Dice", "s/case", "cases"]

    def lesion(m: dict[str, Any], region: str, key: str, fmt: str) -> str:
        entry = m[region].get(key)
        return format(entry["mean"], fmt) if entry else "-"

    lines = [head]
    for name, s in summaries.items():
        m = s["metrics"]
        secs = s.get("network_seconds_per_case")
        lines.append(
            [
                name,
                f"{s.get('spatial_dims', '-')}-D" if s.get("spatial_dims") else "-",
                f"{s['parameters']:,}" if s.get("parameters") else "-",
                *(f"{m[r]['dice']['mean']:.3f}" for r in REGIONS),
                *(f"{m[r]['iou']['mean']:.3f}" for r in REGIONS),
                *(lesion(m, r, "lesion_dice", ".3f") for r in REGIONS),
                *(lesion(m, r, "lesion_hd95", ".1f") for r in REGIONS),
                f"{s['mean_dice']:.3f}",
                f"{secs:.2f}" if secs else "-",
                str(s["n_cases"]),
            ]
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True)))
        for row in lines
    )


@dataclass(frozen=True)
class Comparison:
    """``bratsseg compare``: the results' table, and with ``paired`` each result minus the first, case by case."""

    names: list[str]
    table: str
    paired: str | None = None

    def text(self) -> str:
        return self.table + (f"\n{self.paired}" if self.paired else "")


def compare_results(results: Sequence[str | Path], paired: bool = False) -> Comparison:
    """Read ``evaluate`` results (folders holding ``summary.json``, or the files) and tabulate them side by side;
    with ``paired``, each result minus the first, case by case, with a 95% bootstrap interval. Each result is
    named by its folder, or by its path where two share a folder name (``fold2`` of two runs)."""
    paths = [Path(r) for r in results]
    if paired and len(paths) < 2:
        raise BratsSegError("--paired compares the first result with the others: give two or more")
    folders = [d if d.is_dir() else d.parent for d in paths]
    short = [f.name for f in folders]
    names = short if len(set(short)) == len(short) else [str(f) for f in folders]
    twice = [f for f, n in zip(folders, names, strict=True) if names.count(n) > 1]
    if twice:
        raise BratsSegError("this results folder is given twice", twice[0])
    summaries = {}
    for name, d, folder in zip(names, paths, folders, strict=True):
        f = d if not d.is_dir() else folder / "summary.json"
        try:
            summaries[name] = json.loads(f.read_text())
        except (OSError, ValueError) as err:
            raise BratsSegError(f"cannot read results ({err})", f) from err
        EvaluationSummary.from_dict(summaries[name], f)  # a file that is not a summary: one line
    table = compare_table(summaries)
    if not paired:
        return Comparison(names, table)
    from bratsseg.metrics.paired import paired_per_case, paired_table

    csvs = [folder / "per_case.csv" for folder in folders]
    rows = []
    for f in csvs:
        try:
            rows.append(read_per_case(f))
        except (OSError, ValueError, KeyError) as err:
            raise BratsSegError(f"cannot read per-case results ({err})", f) from err
    diffs = [paired_per_case(rows[0], r, f) for r, f in zip(rows[1:], csvs[1:], strict=True)]
    return Comparison(names, table, paired_table(names[1:], diffs, names[0]))


# ---- the compression study's table (bratsseg.engine.compress_study), torch-free for `bratsseg report` ----


def within_noise(row: dict[str, Any], base: dict[str, Any]) -> bool:
    """Whether a variant's latency differs from the base model's by less than the two runs' own spread."""
    spread = float(row.get("latency_spread", 0.0)) + float(base.get("latency_spread", 0.0))
    return abs(float(row["latency_s"]) - float(base["latency_s"])) <= spread * float(base["latency_s"])


def compression_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The study as a Markdown table a reader can take in (IoU and HD95 stay in ``compress.csv``), with a note
    where a speed difference is inside the run-to-run spread."""
    head = ["variant", "parameters", "non-zero", "file MB", "zipped MB", "GFLOPs", "s per case", "speed-up",
            "Dice WT", "Dice TC", "Dice ET"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = rows[0]
    noisy = 0
    for r in rows:
        noise = r is not base and "latency_spread" in r and within_noise(r, base)
        noisy += noise
        cells = [
            r["variant"],
            f"{r['parameters'] / 1e6:.2f} M",
            f"{r['nonzero_parameters'] / 1e6:.2f} M",
            f"{r['file_mb']:.2f}",
            f"{r['compressed_mb']:.2f}",
            f"{r['gflops']:.1f}",
            f"{r['latency_s']:.3f}",
            f"{r['speedup']:.2f}x" + (" (noise)" if noise else ""),
            *(f"{r[f'dice_{g}']:.3f}" for g in REGIONS),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if noisy:
        lines += ["", f"(noise): {noisy} variant(s) differ from the base model's time by less than the spread of their "
                  "repeated runs: no speed difference is shown there."]  # fmt: skip
    return "\n".join(lines) + "\n"

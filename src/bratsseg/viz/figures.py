"""Figures as functions that return matplotlib Figures (Agg backend); they never show or save themselves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import NDArray

from bratsseg.labels import REGION_COLOURS, REGIONS

MODALITY_NAMES = ("FLAIR", "T1", "T1ce", "T2")


def threshold_curves(sweeps: Mapping[str, dict[str, Any]], metric: str = "iou") -> Figure:
    """Mean IoU (or Dice) over regions against the threshold, one line per model, best thresholds marked."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    key = f"mean_{metric}"
    for name, sweep in sweeps.items():
        t = np.asarray(sweep["thresholds"])
        per_region = np.array([sweep[key][r] for r in REGIONS])
        mean = per_region.mean(axis=0)
        (line,) = axes[0].plot(t, mean, label=name)
        k = int(np.argmax(mean))
        axes[0].plot(t[k], mean[k], "o", color=line.get_color())
        axes[0].annotate(f"{t[k]:.2f}: {mean[k]:.3f}", (t[k], mean[k]), textcoords="offset points", xytext=(4, 4))
        for r, region in enumerate(REGIONS):
            axes[1].plot(
                t,
                per_region[r],
                color=REGION_COLOURS[region],
                alpha=0.9,
                linestyle=["-", "--", ":", "-."][list(sweeps).index(name) % 4],
                label=f"{name} {region}",
            )
    axes[0].set(xlabel="threshold", ylabel=f"mean {metric.upper()} over WT, TC, ET", title="Global threshold")
    axes[1].set(xlabel="threshold", ylabel=metric.upper(), title="Per region")
    for ax in axes:
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend(fontsize=7, ncol=max(1, len(sweeps)))
    return fig


def _overlay(ax: Any, background: NDArray[Any], labels: NDArray[Any] | None, title: str) -> None:
    ax.imshow(background.T, cmap="gray", origin="lower")
    if labels is not None:
        # labels here are region codes: 1 oedema-only (WT), 2 core (TC), 3 enhancing (ET)
        cmap = ListedColormap([REGION_COLOURS["WT"], REGION_COLOURS["TC"], REGION_COLOURS["ET"]])
        masked = np.ma.masked_where(labels.T == 0, labels.T)
        ax.imshow(masked, cmap=cmap, vmin=1, vmax=3, alpha=0.55, origin="lower", interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def region_codes(regions: NDArray[Any]) -> NDArray[np.uint8]:
    """``(3, ...)`` WT/TC/ET masks -> 0 none, 1 WT only, 2 TC (not ET), 3 ET: for drawing."""
    out = np.zeros(regions.shape[1:], dtype=np.uint8)
    out[regions[0] > 0] = 1
    out[regions[1] > 0] = 2
    out[regions[2] > 0] = 3
    return out


def cross_section(
    image: NDArray[Any],
    truth: NDArray[Any] | None,
    pred: NDArray[Any] | None,
    z: int | None = None,
    title: str = "",
) -> Figure:
    """An axial slice: the four modalities, then truth and prediction overlaid on T1ce in three colours.

    ``image`` is ``(4, X, Y, Z)``; ``truth`` and ``pred`` are ``(3, X, Y, Z)`` region masks (or None).
    ``z`` defaults to the slice with the most tumour in the truth (or the prediction).
    """
    if z is None:
        ref = truth if truth is not None else pred
        z = int(np.argmax(ref[0].sum(axis=(0, 1)))) if ref is not None else image.shape[-1] // 2
    panels = 4 + (truth is not None) + (pred is not None)
    fig, axes = plt.subplots(1, panels, figsize=(2.6 * panels, 3), constrained_layout=True)
    for m in range(4):
        _overlay(axes[m], np.asarray(image[m, :, :, z], dtype=np.float32), None, MODALITY_NAMES[m])
    i = 4
    t1ce = np.asarray(image[2, :, :, z], dtype=np.float32)
    if truth is not None:
        _overlay(axes[i], t1ce, region_codes(np.asarray(truth[:, :, :, z])), "truth")
        i += 1
    if pred is not None:
        _overlay(axes[i], t1ce, region_codes(np.asarray(pred[:, :, :, z])), "prediction")
    handles = [
        matplotlib.patches.Patch(color=REGION_COLOURS[r], label=lbl)
        for r, lbl in (("WT", "oedema (ED)"), ("TC", "necrosis / non-enhancing core (NCR)"), ("ET", "enhancing (ET)"))
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, bbox_to_anchor=(0.5, -0.08))
    fig.suptitle(f"{title} (axial slice {z})".strip(), fontsize=10)
    return fig


def dice_boxplot(results: Mapping[str, Sequence[dict[str, Any]]], metric: str = "dice") -> Figure:
    """Per-region box plots of a per-case metric, one box per result set (model) and region."""
    fig, ax = plt.subplots(figsize=(2 + 2.2 * len(results), 4), constrained_layout=True)
    names = list(results)
    width = 0.8 / max(1, len(names))
    for j, name in enumerate(names):
        data = [[float(r[metric]) for r in results[name] if r["region"] == region] for region in REGIONS]
        pos = np.arange(3) + (j - (len(names) - 1) / 2) * width
        box = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True, showmeans=True)
        for patch in box["boxes"]:
            patch.set_facecolor(plt.get_cmap("tab10")(j))
            patch.set_alpha(0.5)
        jitter = np.random.default_rng(j).uniform(-0.15, 0.15, size=max(1, max(len(d) for d in data))) * width
        for x, values in zip(pos, data, strict=True):  # every case as a dot: with few cases the box hides them
            ax.scatter(x + jitter[: len(values)], values, s=10, color="k", alpha=0.6, zorder=3)
        ax.plot([], [], color=plt.get_cmap("tab10")(j), linewidth=8, alpha=0.5, label=name)
    ax.set_xticks(range(3), REGIONS)
    ax.set_ylabel(metric)
    if metric in ("dice", "iou"):
        ax.set_ylim(0, 1.02)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{metric} per case")
    return fig


def training_curves(records: Sequence[dict[str, Any]]) -> Figure:
    """Training loss and validation Dice per region against the epoch, from ``metrics.jsonl`` records."""
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    epochs = [r["epoch"] for r in records]
    ax_loss.plot(epochs, [r["train_loss"] for r in records], marker=".")
    ax_loss.set(xlabel="epoch", ylabel="training loss (BCE + Dice)", title="Training loss")
    val = [r for r in records if "val_dice" in r]
    for region in REGIONS:
        ax_dice.plot(
            [r["epoch"] for r in val],
            [r["val_dice"][region] for r in val],
            marker=".",
            color=REGION_COLOURS[region],
            label=region,
        )
    if val:
        ax_dice.plot([r["epoch"] for r in val], [r["val_mean_dice"] for r in val], "k--", label="mean")
    ax_dice.set(xlabel="epoch", ylabel="validation Dice", title="Validation Dice", ylim=(0, 1))
    ax_dice.legend()
    for ax in (ax_loss, ax_dice):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def _front(xs: NDArray[Any], ys: NDArray[Any]) -> NDArray[np.intp]:
    """Indices of the points no other point beats (smaller x and larger y), sorted by x."""
    order = np.argsort(xs)
    keep, best = [], -np.inf
    for i in order:
        if ys[i] > best:
            keep.append(i)
            best = ys[i]
    return np.asarray(keep, dtype=np.intp)


def _label_groups(
    xs: NDArray[Any], ys: NDArray[Any], names: Sequence[str], log_x: bool, y_span: float
) -> list[tuple[float, float, str]]:
    """One label per cluster of points whose labels would print on top of each other (within a tenth of the x
    axis, and a label's height on the y axis): their names joined, so no label hides another."""
    xv = np.log10(np.maximum(xs, 1e-12)) if log_x else xs
    x_tol = 0.10 * max(float(np.ptp(xv)), 1e-9)
    y_tol = 0.04 * y_span
    groups: list[list[int]] = []
    for i in np.argsort(xv):
        for g in groups:
            if abs(xv[g[-1]] - xv[i]) <= x_tol and abs(ys[g[0]] - ys[i]) <= y_tol:
                g.append(int(i))
                break
        else:
            groups.append([int(i)])
    return [(float(xs[g[0]]), float(ys[g[0]]), ", ".join(names[i] for i in g)) for g in groups]


def pareto(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Mean Dice against CPU latency and against file size, one point per compressed variant, the Pareto
    front (no variant both faster/smaller and more accurate) joined by a line. The Dice axis spans at least 0.1,
    so that differences of a few thousandths do not look like a cliff; points that would overlap share a label."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), constrained_layout=True)
    markers = {"fp32": "o", "fp16": "s", "int8": "^"}
    y = np.array([float(r["mean_dice"]) for r in rows])
    names = [str(r["variant"]) for r in rows]
    centre, half = (float(y.max()) + float(y.min())) / 2, max(0.05, float(np.ptp(y)) / 2 + 0.01)
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    if high - low < 2 * half:  # pinned at 0 or 1: keep the span
        low, high = (0.0, 2 * half) if low == 0.0 else (1.0 - 2 * half, 1.0)
    for ax, key, label, log_x in (
        (axes[0], "latency_s", "CPU seconds per case", False),
        (axes[1], "file_mb", "file size (MB, log scale)", True),
    ):
        x = np.array([float(r[key]) for r in rows])
        for i, r in enumerate(rows):
            family = names[i].split()[0].split("-")[0]
            colour = {"base": "k", "global": "#1f77b4", "pair": "#9467bd"}.get(family, "#8c564b")
            if "+ft" in names[i]:
                colour = "#17becf"
            ax.scatter(x[i], y[i], marker=markers.get(str(r["precision"]), "o"), color=colour, zorder=3)
        placed: list[tuple[float, float, int]] = []  # a label near an earlier one at its height goes below its point
        xr = np.log10(np.maximum(x, 1e-12)) if log_x else x
        span_x = max(float(np.ptp(xr)), 1e-9)
        for gx, gy, text in sorted(_label_groups(x, y, names, log_x, high - low)):
            gxr = float(np.log10(max(gx, 1e-12))) if log_x else gx
            near = [  # earlier labels close by at this height (one lower down is clear of a label above its point)
                dy for px, py, dy in placed if abs(px - gxr) < 0.35 * span_x and py - gy + 0.01 * (high - low) >= 0
                and py - gy < 0.06 * (high - low)
            ]  # fmt: skip
            dy = -9 if near and near[-1] > 0 else 3
            placed.append((gxr, gy, dy))
            ax.annotate(text, (gx, gy), fontsize=6, textcoords="offset points", xytext=(4, dy))
        front = _front(x, y)
        ax.plot(x[front], y[front], "--", color="grey", zorder=2, label="Pareto front")
        ax.set(xlabel=label, ylabel="mean Dice (WT, TC, ET)", ylim=(low, high))
        ax.grid(alpha=0.3)
        if log_x:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    handles = [plt.Line2D([], [], marker=m, linestyle="", color="grey", label=p) for p, m in markers.items()]
    axes[0].legend(handles=[*handles, plt.Line2D([], [], linestyle="--", color="grey", label="Pareto front")])
    axes[0].set_title("Accuracy vs speed")
    axes[1].set_title("Accuracy vs size")
    return fig

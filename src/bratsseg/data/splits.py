"""Seeded k-fold splits of case ids, stored with each run so that validation is always the same cases."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bratsseg.errors import BratsSegError


def kfold_split(
    case_ids: Sequence[str],
    folds: int,
    fold: int,
    seed: int,
    stratify: Sequence[str] = (),
    strata: Sequence[Sequence[str]] = (),
) -> dict[str, list[str]]:
    """``{"train": [...], "val": [...]}`` for fold ``fold`` of ``folds``, shuffled with ``seed``.

    The assignment depends only on the sorted ids, the seed and ``stratify``; ``fold == -1`` puts every case
    in train. ``stratify`` names a minority stratum (say the low-grade cases): its cases present in
    ``case_ids`` are dealt over the folds first, one per fold, so no fold holds all of them and every
    training set keeps some; the other cases fill the folds after them. Empty: a plain shuffled k-fold.
    """
    ids = sorted(set(case_ids))
    if len(ids) != len(case_ids):
        raise BratsSegError("case ids must be unique")
    if fold == -1:
        return {"train": ids, "val": []}
    if folds < 2 or len(ids) < folds:
        raise BratsSegError(f"cannot make {folds} folds from {len(ids)} case(s)")
    order = np.random.default_rng(seed).permutation(len(ids))
    groups = [set(g) for g in ([stratify] if stratify else []) + [g for g in strata if g]]
    if groups:
        seen: set[str] = set()
        dealt: list[int] = []
        for group in groups:
            unknown = sorted(group - set(ids))
            if len(unknown) == len(group):
                raise BratsSegError(f"stratify names none of the cases: {unknown[:5]}")
            overlap = sorted(group & seen)
            if overlap:
                raise BratsSegError(f"a case is in two strata: {overlap[:5]}")
            seen |= group
            dealt += [int(i) for i in order if ids[i] in group]
        order = np.array(dealt + [int(i) for i in order if ids[i] not in seen])
    val = sorted(ids[i] for i in order[fold::folds])
    return {"train": [i for i in ids if i not in set(val)], "val": val}


def subsample_cases(
    case_ids: Sequence[str], fraction: float, seed: int, strata: Sequence[Sequence[str]] = ()
) -> list[str]:
    """A seeded ``fraction`` of ``case_ids`` (sorted), taken stratum by stratum: from each of ``strata`` and from
    the cases in none of them, ``round(fraction * n)`` of its ``n`` cases, at least one where ``n > 0`` (so a
    learning curve keeps, say, a low-grade case in every training set). ``fraction == 1``: every case."""
    if not 0.0 < fraction <= 1.0:
        raise BratsSegError(f"the fraction of training cases must lie in (0, 1], got {fraction}")
    ids = sorted(set(case_ids))
    if fraction == 1.0:
        return ids
    rng = np.random.default_rng(seed)
    groups = [sorted(set(g) & set(ids)) for g in strata]
    rest = sorted(set(ids) - {i for g in groups for i in g})
    kept: list[str] = []
    for group in [*groups, rest]:
        if group:
            n = max(1, round(fraction * len(group)))
            kept += [group[int(i)] for i in rng.permutation(len(group))[:n]]
    return sorted(kept)

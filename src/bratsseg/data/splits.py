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

"""Shared fixtures: tiny synthetic cases written as real NIfTI, and the real cases in ../shared/data."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bratsseg.data.synthetic import make_synthetic_case, make_synthetic_dataset
from bratsseg.io.discovery import Case

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BRATSSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
REAL_BRATS = SHARED_DATA / "brats"
REAL_2023 = SHARED_DATA / "brats2023-unlabelled"


def need(path: Path) -> Path:
    """Skip the calling test, saying why, when a shared data folder is absent."""
    if not path.is_dir():
        pytest.skip(f"real BraTS data not found at {path} (set BRATSSEG_SHARED_DATA to the shared/data folder)")
    return path


@pytest.fixture(scope="session")
def real_brats() -> Path:
    return need(REAL_BRATS)


@pytest.fixture(scope="session")
def real_2023() -> Path:
    return need(REAL_2023)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset root that tests must not modify: three tiny cases in 2021 naming and one in 2023 naming."""
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(root, 3, naming="brats2021", size="tiny", seed=10)
    make_synthetic_dataset(root, 1, naming="brats2023", size="tiny", seed=20)
    return root


GOLDEN = REPO / "tests" / "golden"


@pytest.fixture(scope="session")
def golden_case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The golden test's input, generated as ``tests/golden/expected.json`` says (no imaging file is committed)."""
    import json

    spec = json.loads((GOLDEN / "expected.json").read_text())["input"]
    root = tmp_path_factory.mktemp("golden")
    return make_synthetic_case(root, spec["case_id"], spec["naming"], size=spec["size"], seed=spec["seed"]).folder


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained small 3-D model on a 2x coarser grid (the bundled model's design)."""
    import torch

    from bratsseg.models.card import InferenceSettings, ModelCard
    from bratsseg.models.files import save_model
    from bratsseg.models.unet import UNet, UNetConfig

    torch.manual_seed(0)
    config = UNetConfig(widths=(4, 8, 16))
    card = ModelCard(architecture=config, inference=InferenceSettings(downsample=2))
    return save_model(tmp_path_factory.mktemp("m") / "model", UNet(config), card)


@pytest.fixture
def case_dir(tmp_path: Path) -> Path:
    """A fresh tiny 2021-naming case folder the test may damage."""
    return make_synthetic_case(tmp_path / "raw", "Tiny_001", "brats2021", size="tiny", seed=3).folder


@pytest.fixture
def fresh_root(tmp_path: Path, synthetic_root: Path) -> Path:
    """A writable copy of :func:`synthetic_root`."""
    dst = tmp_path / "root"
    shutil.copytree(synthetic_root, dst)
    return dst


def files_of(case: Case) -> dict[str, Path]:
    return {"flair": case.images[0], "t1": case.images[1], "t1ce": case.images[2], "t2": case.images[3]} | (
        {"seg": case.seg} if case.seg else {}
    )

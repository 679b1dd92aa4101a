"""The README's cross-validation tables are rendered from the shipped model card, never typed by hand."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _cv_tables():
    spec = importlib.util.spec_from_file_location("cv_tables", ROOT / "scripts" / "cv_tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_cv_block_is_what_the_bundled_card_renders():
    tables = _cv_tables()
    readme = (ROOT / "README.md").read_text()
    assert tables.BEGIN in readme and tables.END in readme
    block = readme.split(tables.BEGIN, 1)[1].split(tables.END, 1)[0]
    ablation = json.loads(tables.ABLATION_JSON.read_text()) if tables.ABLATION_JSON.is_file() else None
    components = json.loads(tables.COMPONENTS_JSON.read_text()) if tables.COMPONENTS_JSON.is_file() else None
    expected = tables.render(json.loads(tables.MODEL_JSON.read_text()), ablation, components)
    assert tables.BEGIN + block + tables.END == expected, "run: python scripts/cv_tables.py --write README.md"


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_benchmark_blocks_are_what_the_measurements_render():
    """The speed, device-runtime and int8 tables are rendered from the JSON files the benchmarks write."""
    readme = (ROOT / "README.md").read_text()
    for name in ("runtime_bench", "int8_bench", "cascade_bench", "predict_bench"):
        bench = _bench(name)
        assert bench.BEGIN in readme and bench.END in readme, name
        block = bench.BEGIN + readme.split(bench.BEGIN, 1)[1].split(bench.END, 1)[0] + bench.END
        expected = bench.render(json.loads(bench.JSON_OUT.read_text()))
        assert block == expected, f"run: python benchmarks/{name}.py --render --write README.md"


@pytest.mark.parametrize(
    "script",
    [
        "lesion_vs_official",
        "component_filter_oof",
        "cv_training_ablation",
        "region_thresholds_oof",
        "paired_oof",
        "outlier_robustness",
        "tumour_free",
        "retrain_compare",
    ],
)
def test_readme_lesion_blocks_are_what_the_json_renders(script):
    spec = importlib.util.spec_from_file_location(script, ROOT / "scripts" / f"{script}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (ROOT / "README.md").read_text()
    block = module.BEGIN + readme.split(module.BEGIN, 1)[1].split(module.END, 1)[0] + module.END
    assert block == module.render(json.loads(module.JSON_OUT.read_text())), (
        f"run: python scripts/{script}.py --render --write README.md"
    )

"""The README and the documentation: every measured number rendered from its JSON (never typed by hand), the command
reference from the parsers, the README a landing page, the site built strictly and drawn in a browser."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CHROMIUM = next((c for c in ("chromium", "chromium-browser", "google-chrome") if shutil.which(c)), None)


def _module(folder: str, name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / folder / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _block(begin: str, end: str) -> tuple[Path, str]:
    """The one page (README or docs/) holding the block between ``begin`` and ``end``, and the block."""
    pages = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    found = [p for p in pages if begin in p.read_text()]
    assert len(found) == 1, f"{begin!r} is in {found or 'no page'}: it must be in exactly one"
    text = found[0].read_text()
    assert end in text, f"{found[0]}: {end!r} missing"
    return found[0], begin + text.split(begin, 1)[1].split(end, 1)[0] + end


def test_cv_block_is_what_the_bundled_card_renders():
    tables = _module("scripts", "cv_tables")
    page, block = _block(tables.BEGIN, tables.END)
    ablation = json.loads(tables.ABLATION_JSON.read_text()) if tables.ABLATION_JSON.is_file() else None
    components = json.loads(tables.COMPONENTS_JSON.read_text()) if tables.COMPONENTS_JSON.is_file() else None
    expected = tables.render(json.loads(tables.MODEL_JSON.read_text()), ablation, components)
    assert block == expected, f"run: python scripts/cv_tables.py --write {page.relative_to(ROOT)}"


@pytest.mark.parametrize("name", ["runtime_bench", "int8_bench", "cascade_bench", "predict_bench", "demo_bench"])
def test_benchmark_blocks_are_what_the_measurements_render(name):
    """The speed, device-runtime, int8 and demo tables are rendered from the JSON files the benchmarks write."""
    bench = _module("benchmarks", name)
    page, block = _block(bench.BEGIN, bench.END)
    expected = bench.render(json.loads(bench.JSON_OUT.read_text()))
    assert block == expected, f"run: python benchmarks/{name}.py --render --write {page.relative_to(ROOT)}"


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
        "prune_oof",
        "et_sampling",
        "wt_errors",
        "small_et",
        "case_look",
        "recipe_compare",
        "tumour_free_cv",
    ],
)
def test_study_blocks_are_what_the_json_renders(script):
    module = _module("scripts", script)
    page, block = _block(module.BEGIN, module.END)
    expected = module.render(json.loads(module.JSON_OUT.read_text()))
    assert block == expected, f"run: python scripts/{script}.py --render --write {page.relative_to(ROOT)}"


def test_headline_table_is_what_the_measurements_render():
    headline = _module("scripts", "headline")
    _, block = _block(headline.BEGIN, headline.END)
    assert block == headline.current(), "run: python scripts/headline.py --write README.md"


def test_command_reference_lists_every_command_and_option():
    reference = _module("scripts", "cli_reference")
    _, block = _block(reference.BEGIN, reference.END)
    assert block == reference.render(), "run: python scripts/cli_reference.py --write docs/reference/cli.md"
    from bratsseg.cli.main import build_parser

    for name in reference.subcommands(build_parser()):
        assert f"## bratsseg {name}\n" in block
    assert "--max-steps" in block and "--set" in block  # what a newcomer could not find before


def test_readme_is_a_landing_page_with_two_commands_and_working_links():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    commands = [line for line in text.splitlines() if line.startswith("python3 -m venv .venv")]
    assert len(commands) == 2 and commands[0].endswith("bratsseg demo -o demo")
    assert commands[1].endswith("python -m pytest")
    for target in {t.split("#")[0] for t in re.findall(r"\]\((docs/[^)\s]+)\)", text)}:
        assert (ROOT / target).is_file(), f"README links to {target}, which does not exist"


def test_every_page_is_in_the_site_navigation():
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(nav):
        for item in nav:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            if isinstance(value, list):
                yield from pages(value)
            else:
                yield value

    listed = set(pages(config["nav"]))
    on_disk = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert listed == on_disk, f"pages not in the navigation: {on_disk - listed}; missing: {listed - on_disk}"


def _mkdocs_build(out: Path) -> None:
    pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'")
    pytest.importorskip("mkdocstrings", reason="the docs extra is not installed: pip install -e '.[docs]'")
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out), "-f", str(ROOT / "mkdocs.yml")]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    _mkdocs_build(out)
    return out


def test_site_builds_strictly_with_the_api_reference(site):
    api = (site / "reference" / "api" / "index.html").read_text()
    assert "evaluate_predictor" in api and "Score <code>predictor</code> on cached cases" in api  # from docstrings
    accuracy = (site / "results" / "accuracy" / "index.html").read_text()
    assert "<table>" in accuracy and "nested" in accuracy


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs it)")
def test_a_documentation_page_renders_in_chromium(site):
    import matplotlib.image
    import numpy as np

    shot = ROOT / "tests" / "artefacts" / "docs_accuracy.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    url = (site / "results" / "accuracy" / "index.html").as_uri()
    assert CHROMIUM is not None
    subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--window-size=1280,1600", "--virtual-time-budget=5000",
                    f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True)  # fmt: skip
    rgb = np.asarray(matplotlib.image.imread(shot))[..., :3] * 255
    assert rgb.std() > 20  # text and tables drawn, not a blank page
    header = rgb[:48]  # Material's coloured header bar (indigo): the theme's CSS loaded from the built site
    indigo = (header[..., 2] > header[..., 0] + 40) & (header[..., 2] > 120)
    assert indigo.mean() > 0.5


@pytest.mark.parametrize("key", ["et-weight-oof", "steps44-oof"])
def test_the_other_paired_blocks_are_what_their_json_renders(key):
    module = _module("scripts", "paired_oof")
    page, block = _block(*module.markers(key))
    expected = module.render(json.loads((ROOT / "docs" / f"{key.replace('-', '_')}.json").read_text()))
    assert block == expected, f"run: python scripts/paired_oof.py --block {key} --render --write {page}"

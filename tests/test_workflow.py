"""`bratsseg crossval` -> `bratsseg bundle` -> `bratsseg predict --mode accurate`, through the CLI, on synthetic
cases: resumable after an interruption without retraining finished folds; the card's nested row; ONNX for every
member; recipes as data; strata from the data or a file; Ctrl-C keeps the checkpoint and says how to go on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from bratsseg.cli.main import main
from bratsseg.data.synthetic import make_synthetic_dataset
from bratsseg.engine.recipes import DEFAULT_RECIPE, load_recipe, recipe_names
from bratsseg.engine.workflow import naming_group, strata_from_file, strata_lists
from bratsseg.errors import BratsSegError

TINY = [
    "--set", "folds=2", "--set", "epochs=2", "--set", "steps_per_epoch=3", "--set", "patch_size=[32,32,32]",
    "--set", "downsample=1", "--set", "model.widths=[4,8,16]",
    "--set", "finetune.epochs=1", "--set", "finetune.steps_per_epoch=2", "--threads", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def six_cases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("six")
    make_synthetic_dataset(root, 6, naming="brats2021", size="tiny", seed=40)
    return root


def _steps(run: Path) -> list[int]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["global_step"] for line in lines]


def test_crossval_resumes_then_bundle_then_predict_accurate(six_cases, tmp_path, capsys):
    import onnxruntime as ort

    run = tmp_path / "run"
    # fold 0 alone (as one machine of several would)
    assert main(["crossval", str(six_cases), "-o", str(run), "--fold", "0", *TINY]) == 0
    assert (run / "eval" / "fold0" / "per_case.csv").is_file() and not (run / "fold1").exists()
    fold0_mtime = (run / "fold0" / "checkpoint.pt").stat().st_mtime_ns
    # an interrupted call: fold 1 stops after 2 of its 6 steps, nothing evaluated, no all-case model
    assert main(["crossval", str(six_cases), "-o", str(run), "--max-steps", "2", *TINY]) == 0
    assert (run / "fold1" / "checkpoint.pt").is_file() and not (run / "fold1" / "metrics.jsonl").exists()
    assert not (run / "eval" / "fold1").exists() and not (run / "all").exists()
    out = capsys.readouterr().out
    assert "still to do: [1]" in out
    # the same command goes on (data and settings come from the run): fold 1 resumes, fold 0 is not retrained
    assert main(["crossval", "-o", str(run), "--threads", "1"]) == 0
    assert (run / "fold0" / "checkpoint.pt").stat().st_mtime_ns == fold0_mtime
    assert _steps(run / "fold1") == [3, 6]  # epochs 1 and 2 end at steps 3 and 6: resumed at step 2, not redone
    assert (run / "all" / "last" / "model.json").is_file()
    # the recipe's fine-tuning stage (shortened by --set finetune.*) continued every network from its last weights,
    # and the fine-tuned fold model is what was evaluated out of fold
    for stage in ("fold0-ft", "fold1-ft", "all-ft"):
        assert _steps(run / stage) == [2], stage
        config = yaml.safe_load((run / stage / "config.yaml").read_text())
        assert config["free_fraction"] == 0.2 and config["init_from"].endswith(stage[:-3] + "/last")
    assert json.loads((run / "eval" / "fold1" / "summary.json").read_text())["model"].endswith("fold1-ft/last")
    assert "cross-validation complete" in capsys.readouterr().out
    plan = json.loads((run / "crossval.json").read_text())
    assert plan["recipe"]["name"] == DEFAULT_RECIPE and plan["config"]["folds"] == 2
    # changing the settings of a run is refused in one line
    assert main(["crossval", str(six_cases), "-o", str(run), "--set", "lr=0.1"]) == 1
    assert "cannot change" in capsys.readouterr().err

    model = tmp_path / "model"
    assert main(["bundle", str(run), "-o", str(model), "--threads", "1"]) == 0
    assert (run / "bundle_choices.json").is_file()
    capsys.readouterr()
    assert main(["bundle", str(run), "-o", str(tmp_path / "again"), "--threads", "1"]) == 0  # choices reused
    assert "reusing the out-of-fold choices" in capsys.readouterr().err
    assert json.loads((tmp_path / "again" / "model.json").read_text()) == json.loads((model / "model.json").read_text())
    card = json.loads((model / "model.json").read_text())
    cv = card["bundle"]["cross_validation"]
    assert cv["n_cases"] == 6 and cv["folds"] == 2
    nested = cv["nested_final"]["per_region"]
    assert set(nested) == {"WT", "TC", "ET"} and all(0 <= nested[g]["dice"] <= 1 for g in nested)
    assert set(cv["per_case"]) == set(json.loads((run / "splits.json").read_text())["fold0"]["train"]) | set(
        json.loads((run / "splits.json").read_text())["fold0"]["val"]
    )
    assert "hd95_pooled" in cv["shipped"] and "small_et" in cv and "per_fold" in cv
    assert card["bundle"]["recipe"]["name"] == DEFAULT_RECIPE
    assert card["bundle"]["recipe"]["commands"][0].startswith("bratsseg crossval")
    assert card["thresholds"]["WT"] == cv["sweep_best_global"]["threshold"]
    assert card["modes"]["accurate"]["members"] == ["folds/fold0", "folds/fold1"]
    # the bundled networks are the fine-tuned ones, their cards the first stage's with a `finetune` step (as shipped)
    from bratsseg.models.files import load_model

    for shipped, stage in ((model, run / "all-ft"), (model / "folds" / "fold1", run / "fold1-ft")):
        net, shipped_card = load_model(shipped)
        tuned, _ = load_model(stage / "last")
        for a, b in zip(net.state_dict().values(), tuned.state_dict().values(), strict=True):
            assert torch.equal(a.float(), b.half().float())
        step = shipped_card.steps("finetune")
        assert [(s.settings["epochs"], s.settings["steps_per_epoch"], s.settings["free_fraction"]) for s in step] == [
            (1, 2, 0.2)
        ]
        assert shipped_card.training.config["free_fraction"] == 0.0 and shipped_card.free_fraction == 0.2
    assert card["modes"]["accurate"]["mirror_axes"] == list(load_recipe(DEFAULT_RECIPE).mirror_axes)
    for onnx in [model / "model.onnx", *(model / "folds" / f"fold{k}" / "model.onnx" for k in (0, 1))]:
        ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])  # loads on ONNX Runtime
    # the bundle is refused a second time without --overwrite
    assert main(["bundle", str(run), "-o", str(model)]) == 1

    for mode in ("accurate", "fast"):
        pred = tmp_path / f"pred-{mode}"
        assert main(["predict", str(six_cases), "-o", str(pred), "--model", str(model), "--mode", mode]) == 0
        assert len(list(pred.glob("*.nii.gz"))) == 6


def test_bundle_chooses_while_the_all_case_model_trains(six_cases, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["crossval", str(six_cases), "-o", str(run), "--no-final", *TINY]) == 0
    capsys.readouterr()
    assert main(["bundle", str(run), "-o", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert "all-case model is not finished" in err and (run / "bundle_choices.json").is_file()
    assert not (tmp_path / "m").exists()


def test_bundle_refuses_an_unfinished_run(six_cases, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["crossval", str(six_cases), "-o", str(run), "--fold", "1", *TINY]) == 0
    capsys.readouterr()
    assert main(["bundle", str(run), "-o", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert "not finished (folds [0])" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()


def test_a_run_that_fails_to_start_leaves_no_folder(six_cases, tmp_path, capsys):
    for bad in (["--recipe", "no-such-recipe"], ["--set", "patch_size=[30,30,30]"], ["--set", "fold=1"]):
        run = tmp_path / "run"
        assert main(["crossval", str(six_cases), "-o", str(run), *bad]) == 1
        assert not run.exists(), bad
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_shipped_recipes_load_and_the_bundled_one_matches_the_card():
    assert {"brats3d-cpu", "brats3d-gpu"} <= set(recipe_names())
    cpu, gpu = load_recipe("brats3d-cpu"), load_recipe("brats3d-gpu")
    assert "no" in gpu.tested.lower()  # documented as untested without a GPU
    from bratsseg.engine.config import TrainConfig, _deep_update, from_dict, to_dict
    from bratsseg.models.bundled import default_model_path
    from bratsseg.models.card import read_card

    # the shipped bundle's training settings are the recipe's (everything the recipe sets)
    trained = read_card(default_model_path()).training.config
    for key, value in cpu.settings.items():
        if isinstance(value, dict):
            for k, v in value.items():
                assert trained[key][k] == v, (key, k)
        else:
            assert trained[key] == (list(value) if isinstance(value, list) else value), key
    for recipe in (cpu, gpu):  # both make valid configs
        data = to_dict(TrainConfig())
        _deep_update(data, recipe.settings)
        from_dict(TrainConfig, data)


def _plan_of(config: dict, stage: dict | None):
    from bratsseg.engine.workflow import CrossvalPlan

    return CrossvalPlan((), {"name": "r", **({"finetune": stage} if stage else {})}, "", (), {}, "", config)


def test_the_fine_tuning_stage_is_checked_and_overridable(tmp_path):
    from bratsseg.engine.workflow import _plan_config, finetune_stage_config, plan_finetune

    cpu = load_recipe("brats3d-cpu")
    assert cpu.finetune == {"epochs": 6, "steps_per_epoch": 100, "lr_factor": 0.5, "settings": {"free_fraction": 0.2}}
    assert plan_finetune(cpu, ["finetune=null"]) is None  # no stage
    short = plan_finetune(cpu, ["finetune.epochs=1", "lr=0.01"])
    assert short is not None and short["epochs"] == 1 and short["steps_per_epoch"] == 100
    config = _plan_config(cpu, ["finetune.epochs=1", "lr=0.01"], {})
    assert config["lr"] == 0.01 and "finetune" not in config  # the stage's overrides are not training settings
    tuned = finetune_stage_config(_plan_of(config, short), 2, tmp_path / "fold2" / "last")
    assert (tuned.epochs, tuned.steps_per_epoch, tuned.lr, tuned.free_fraction, tuned.fold) == (1, 100, 0.005, 0.2, 2)
    assert tuned.init_from == str(tmp_path / "fold2" / "last") and tuned.warmup_steps == 10
    bad = tmp_path / "r.yaml"
    for text, match in (
        ("settings: {}\nfinetune: {epochs: 1}\n", "integer epochs and steps_per_epoch"),
        ("settings: {}\nfinetune: {epochs: 1, steps_per_epoch: 2, warm: 3}\n", "unknown finetune keys"),
        ("settings: {}\nfinetune: {epochs: 0, steps_per_epoch: 2}\n", "epochs >= 1"),
        ("settings: {}\nfinetune: {epochs: 1, steps_per_epoch: 2, settings: {lr: 1}}\n", "may not set"),
    ):
        bad.write_text(text)
        with pytest.raises(BratsSegError, match=match):
            load_recipe(bad)
    with pytest.raises(BratsSegError, match="free_fraction"):  # the stage's settings are checked with the plan
        _plan_config(cpu, ["finetune.settings.free_fraction=1.5"], {})


def test_recipe_errors_are_one_line(tmp_path):
    with pytest.raises(BratsSegError, match="no recipe named"):
        load_recipe("nope")
    bad = tmp_path / "r.yaml"
    bad.write_text("settings: [1, 2]\n")
    with pytest.raises(BratsSegError, match="'settings' mapping"):
        load_recipe(bad)
    bad.write_text("settings: {}\nmodel: {}\n")
    with pytest.raises(BratsSegError, match="unknown recipe keys"):
        load_recipe(bad)


def test_strata_from_names_and_from_a_file(tmp_path):
    assert naming_group("Brats18_TCIA10_628_1") == "Brats18_TCIA"
    assert naming_group("Brats18_CBICA_AQN_1") == "Brats18_CBICA"
    assert naming_group("BraTS2021_00000") == "BraTS2021"
    assert naming_group("BraTS-GLI-00000-000") == "BraTS_GLI"
    groups = {"a": "small-ET/x", "b": "x", "c": "y", "d": "small-ET/x"}
    assert strata_lists(groups) == [["a", "d"], ["b"], ["c"]]
    f = tmp_path / "strata.csv"
    f.write_text("case_id,group\na,LGG\nb,HGG\n")
    assert strata_from_file(f, ["a", "b"]) == {"a": "LGG", "b": "HGG"}
    with pytest.raises(BratsSegError, match="have no group"):
        strata_from_file(f, ["a", "b", "c"])


@pytest.mark.slow
def test_ctrl_c_keeps_the_checkpoint_and_prints_the_command_that_goes_on(six_cases, tmp_path):
    """SIGINT during `bratsseg train`: stop at a step, save, exit 130 with the exact resume command."""
    cache = tmp_path / "cache"
    assert main(["preprocess", str(six_cases), "-o", str(cache)]) == 0
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "bratsseg.cli.main", "train", "--data", str(cache), "-o", str(run),
           "--set", "epochs=500", "--set", "steps_per_epoch=2", "--set", "patch_size=[32,32,32]",
           "--set", "model.widths=[4,8,16]", "--set", "val_every=1000", "--threads", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "checkpoint saved" in err and "--resume" in err
    assert (run / "checkpoint.pt").is_file()
    assert "epoch 1/500 step 2/1000 loss" in err  # one readable line per epoch off a terminal


@pytest.mark.realdata
def test_crossval_with_the_bundled_recipe_reproduces_the_bundled_folds_and_settings(real_brats):
    """The shipped fold models are what `bratsseg crossval --recipe brats3d-cpu` plans: the same settings, and (for
    the bundle made on the 22 shared cases before these commands, with `--strata scripts/strata_shared22.csv`) the
    same validation cases in every fold."""
    from bratsseg.data.splits import kfold_split
    from bratsseg.engine.config import TrainConfig, to_dict
    from bratsseg.engine.workflow import _plan_config, finetune_stage_config, plan_finetune
    from bratsseg.models.bundled import default_model_path
    from bratsseg.models.card import read_card

    repo = Path(__file__).resolve().parents[1]
    bundle = default_model_path()
    recipe_info = read_card(bundle).bundle["recipe"]
    made_by_bundle = isinstance(recipe_info, dict)  # `bratsseg bundle` records the recipe as data
    overrides = recipe_info.get("overrides", []) if made_by_bundle else []
    ids = sorted(p.name for p in real_brats.iterdir() if p.is_dir())
    groups = {} if made_by_bundle else strata_from_file(repo / "scripts" / "strata_shared22.csv", ids)
    planned = _plan_config(load_recipe("brats3d-cpu"), overrides, groups)
    for k in range(planned["folds"]):
        card = read_card(bundle / "folds" / f"fold{k}")
        # a setting added after these networks were trained is absent from their cards: its default is what they
        # were trained with (each new setting's default reproduces the training as it was: tests/test_sampling.py,
        # tests/test_losses.py)
        defaults = to_dict(TrainConfig())
        shipped = {**{k: v for k, v in defaults.items() if k not in card.training.config}, **card.training.config}
        differ = {key for key in set(planned) | set(shipped) if planned.get(key) != shipped.get(key)}
        # the strata come from a file or the data (the split is checked below); train_fraction (1.0) and
        # distillation (no teacher) came later; tumour-free samples are drawn in the fine-tuning stage only
        allowed = {"strata", "stratify", "fold", "train_fraction", "teacher", "distill_weight", "free_fraction"}
        assert differ <= allowed, differ
        assert planned.get("teacher") is None and planned.get("free_fraction") == 0.0
        # ... in the recipe's fine-tuning stage, which the cards record as their `finetune` step
        stage = plan_finetune(load_recipe("brats3d-cpu"), overrides)
        tuned = finetune_stage_config(_plan_of(planned, stage), k, "-")
        (step,) = card.steps("finetune")
        assert (step.settings["epochs"], step.settings["steps_per_epoch"]) == (tuned.epochs, tuned.steps_per_epoch)
        assert step.settings["lr"] == pytest.approx(tuned.lr) and tuned.free_fraction == step.settings["free_fraction"]
        assert card.free_fraction == 0.2
        assert shipped["fold"] == k and planned.get("train_fraction") == 1.0
        if not made_by_bundle:
            split = kfold_split(ids, planned["folds"], k, planned["seed"], (), planned["strata"])
            assert split["val"] == sorted(card.training.val_cases)


def test_a_full_disk_is_one_line_and_loses_nothing(six_cases, tmp_path, capsys, monkeypatch):
    """ENOSPC while `train` saves a checkpoint, and while `preprocess` writes each case: one line each."""
    import errno

    import bratsseg.data.preprocess as preprocess_module
    import bratsseg.engine.trainer as trainer_module

    cache = tmp_path / "cache"
    real_write = preprocess_module.write_cached_case

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(cache / "x" / "image.npy"))

    monkeypatch.setattr(preprocess_module, "write_cached_case", full)
    assert main(["preprocess", str(six_cases), "-o", str(cache)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("No space left on device") == 6
    monkeypatch.setattr(preprocess_module, "write_cached_case", real_write)
    assert main(["preprocess", str(six_cases), "-o", str(cache)]) == 0
    capsys.readouterr()

    run = tmp_path / "run"
    args = ["train", "--data", str(cache), "-o", str(run), "--set", "epochs=2", "--set", "steps_per_epoch=2",
            "--set", "patch_size=[32,32,32]", "--set", "model.widths=[4,8,16]", "--threads", "1"]  # fmt: skip
    real_save = trainer_module.save_checkpoint
    calls = []

    def save_then_fill(state, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_save(state, path)

    monkeypatch.setattr(trainer_module, "save_checkpoint", save_then_fill)
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err) and err[-1].startswith("error: No space left on device")
    assert "checkpoint is intact" in err[-1] and "--resume" in err[-1]
    monkeypatch.setattr(trainer_module, "save_checkpoint", real_save)
    assert main([*args, "--resume"]) == 0  # the checkpoint of epoch 1 was intact: it goes on
    assert _steps(run) == [2, 4]


@pytest.mark.slow
def test_crossval_under_torchrun_on_cpu(six_cases, tmp_path):
    """Two processes (gloo) run the whole cross-validation together: rank 0 prepares and locks, every fold is
    trained once (one metrics line per epoch), evaluated, and the all-case model follows."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "bratsseg",
           "crossval", str(six_cases), "-o", str(run), *TINY[:-2]]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("cross-validation complete") == 1  # rank 0 reports
    for k in (0, 1):
        assert _steps(run / f"fold{k}") == [3, 6] and (run / "eval" / f"fold{k}" / "per_case.csv").is_file()
    assert (run / "all" / "last" / "model.json").is_file() and not list(run.glob("*.lock"))

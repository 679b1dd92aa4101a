import itertools
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

from bratsseg import BratsSegError
from bratsseg.data.cache import open_cache
from bratsseg.data.preprocess import preprocess_dataset
from bratsseg.data.sampling import PatchDataset
from bratsseg.engine.checkpoint import load_checkpoint, save_checkpoint
from bratsseg.engine.config import TrainConfig, load_train_config, to_dict
from bratsseg.engine.trainer import lr_factor, train
from bratsseg.losses import RegionLoss
from bratsseg.models import UNet, UNetConfig
from bratsseg.models.files import load_model

TINY = [
    "model.widths=[4,8,16]",
    "patch_size=[16,16,16]",
    "batch_size=2",
    "epochs=2",
    "steps_per_epoch=3",
    "warmup_steps=1",
    "folds=4",
    "num_workers=0",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory, synthetic_root) -> Path:
    root = tmp_path_factory.mktemp("cache")
    assert preprocess_dataset(synthetic_root, root).ok
    return root


def tiny(*extra: str) -> TrainConfig:
    return load_train_config(None, [*TINY, *extra])


def test_tiny_model_overfits_one_case(cache):
    """Loss on one fixed batch from one synthetic case falls from about 1.7 to below 0.6 in 60 Adam steps."""
    torch.manual_seed(0)
    case = open_cache(cache)[1]
    ds = PatchDataset([case], (32, 32, 32), 2, fg_fraction=1.0, seed=0)
    image, target = (torch.stack(t) for t in zip(ds[0], ds[1], strict=True))
    model = UNet(UNetConfig(widths=(8, 16, 32)))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = RegionLoss()
    losses = []
    for _ in range(60):
        loss = loss_fn(model(image), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[0] > 1.2
    assert losses[-1] < 0.6, losses


def test_config_file_overrides_and_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"lr": 0.01, "model": {"widths": [4, 8, 16, 32]}}))
    cfg = load_train_config(path, ["epochs=3", "model.spatial_dims=2", "patch_size=[64,64]"])
    assert cfg.lr == 0.01 and cfg.epochs == 3 and cfg.model.widths == (4, 8, 16, 32) and cfg.model.spatial_dims == 2
    assert load_train_config(None, []) == TrainConfig()
    with pytest.raises(BratsSegError, match="unknown config key"):
        load_train_config(None, ["learning_rate=1"])
    with pytest.raises(BratsSegError, match="multiple of 16"):
        load_train_config(None, ["patch_size=[96,96,90]"])
    with pytest.raises(BratsSegError, match="has 2 entries but the model is 3-D"):
        load_train_config(None, ["patch_size=[96,96]"])
    with pytest.raises(BratsSegError, match="expected int"):
        load_train_config(None, ["epochs=many"])
    assert load_train_config(None, ["lr=1e-3"]).lr == 1e-3  # YAML 1.1 reads 1e-3 as a string
    with pytest.raises(BratsSegError, match="expected float"):
        load_train_config(None, ["lr=fast"])


def test_model_trained_on_a_margin_5_cache_records_and_uses_margin_5(synthetic_root, tmp_path, monkeypatch):
    from bratsseg.data.preprocess import PreprocessConfig
    from bratsseg.engine import predict as predict_module
    from bratsseg.engine.predict import predict
    from bratsseg.io.discovery import discover_cases

    cache5 = tmp_path / "cache5"
    assert preprocess_dataset(synthetic_root, cache5, PreprocessConfig(margin=5)).ok
    train(cache5, tmp_path / "run", tiny("epochs=1", "steps_per_epoch=1"))
    model = tmp_path / "run" / "last"
    card = load_model(model)[1]
    assert card.preprocessing.margin == 5 and card.preprocessing.image_dtype == "float16"
    # predict crops every case with the model's margin, so the network sees what it was trained on: the crop
    # equals the margin-5 cache's crop of the same case
    seen = []
    real = predict_module.crop_and_normalise
    monkeypatch.setattr(predict_module, "crop_and_normalise", lambda img, m, **kw: seen.append(m) or real(img, m, **kw))
    case = sorted(discover_cases(synthetic_root).cases, key=lambda c: c.case_id)[0]
    assert predict([case.folder], tmp_path / "out", model).ok and seen == [5]
    cached = next(c for c in open_cache(cache5) if c.case_id == case.case_id)
    from bratsseg.io.nifti import load_case

    assert real(load_case(case, load_seg=False).image, 5).box == cached.bbox


def test_lr_schedule():
    cfg = tiny("epochs=10", "steps_per_epoch=10", "warmup_steps=10")
    factors = [lr_factor(s, cfg) for s in range(100)]
    assert factors[0] < factors[9] <= 1 and factors[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(factors[10:]))
    assert factors[-1] < 0.01


def test_run_folder_contents(cache, tmp_path):
    result = train(cache, tmp_path / "run", tiny())
    assert result.finished and result.state.global_step == 6
    run = tmp_path / "run"
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [ln["epoch"] for ln in lines] == [1, 2]
    split = json.loads((run / "split.json").read_text())
    assert len(split["val"]) == 1 and len(split["train"]) == 3
    assert set(lines[-1]["val_per_case"]) == set(split["val"])
    assert set(lines[-1]["val_dice"]) == {"WT", "TC", "ET"} and 0 <= lines[-1]["data_wait_fraction"] <= 1
    assert yaml.safe_load((run / "config.yaml").read_text()) == to_dict(tiny())
    model, card = load_model(run / "best")
    assert model.config == tiny().model
    assert card.thresholds == {"WT": 0.5, "TC": 0.5, "ET": 0.5} and card.convention in ("brats2021", "brats2023")
    # the card says what the run validated with, and where the weights came from
    assert card.inference.overlap == tiny().val_overlap and card.inference.roi_size == tiny().val_roi
    last = load_model(run / "last")[1].training
    assert last.global_step == 6 and list(last.val_cases) == split["val"] and last.config == to_dict(tiny())
    best_epoch = [ln["epoch"] for ln in lines if ln["best"]][-1]  # best/ holds the weights of that epoch
    assert card.training.epoch == best_epoch and card.training.global_step == 3 * best_epoch
    ckpt = load_checkpoint(run / "checkpoint.pt")  # weights_only=True
    assert ckpt["state"]["epoch"] == 2
    # a finished run is not silently overwritten
    with pytest.raises(BratsSegError, match="--resume"):
        train(cache, run, tiny())
    with pytest.raises(BratsSegError, match=r"cannot resume with changed settings \['lr'\]"):
        train(cache, run, tiny("lr=0.5"), resume=True)


@pytest.mark.parametrize("stop_at", [2, 4])
def test_resume_equals_uninterrupted(cache, tmp_path, stop_at):
    """N steps straight vs stop after some + resume: identical weights (end of epoch and mid-epoch)."""
    cfg = tiny("augment.spatial_prob=0.5")
    train(cache, tmp_path / "straight", cfg)
    first = train(cache, tmp_path / "pieces", cfg, max_steps=stop_at)
    assert not first.finished and first.state.global_step == stop_at
    second = train(cache, tmp_path / "pieces", None, resume=True)
    assert second.finished and second.state.global_step == 6
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "pieces" / "checkpoint.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["optimizer"]["state"][0]["step"] == b["optimizer"]["state"][0]["step"]
    metrics = [json.loads(ln) for ln in (tmp_path / "pieces" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}}, path)

    def dies_mid_write(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"model": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def _train_cmd(cache: Path, run: Path, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "bratsseg", "train", "--data", str(cache), "-o", str(run), "--threads", "1"]
    for s in [*TINY, *extra]:
        cmd += ["--set", s]
    return cmd


@pytest.mark.slow
def test_sigkill_then_resume(cache, tmp_path):
    run = tmp_path / "run"
    # checkpoint after every step, so that SIGKILL lands near (or during) checkpoint writes
    cmd = _train_cmd(cache, run, "epochs=30", "steps_per_epoch=4", "checkpoint_every_s=0")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "metrics.jsonl").exists():
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(run / "checkpoint.pt")["state"]["global_step"]  # complete, loadable
    assert 0 < killed_at < 120
    done = subprocess.run(
        [*cmd[: cmd.index("--set")], "--resume"], capture_output=True, text=True, env={**os.environ}, timeout=600
    )
    assert done.returncode == 0, done.stderr
    state = load_checkpoint(run / "checkpoint.pt")["state"]
    assert state["global_step"] == 120 and state["epoch"] == 30
    assert not list(run.glob(".*.tmp"))
    epochs = [json.loads(ln)["epoch"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs[-1] == 30 and sorted(set(epochs)) == list(range(1, 31))


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(cache, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "bratsseg", *_train_cmd(cache, run)[3:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Grad strides do not match bucket view strides" not in proc.stderr  # parameters in DDP's layout
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [ln["epoch"] for ln in lines] == [1, 2]  # written once, by rank 0
    assert lines[-1]["global_step"] == 6  # the same step count as one process
    split = json.loads((run / "split.json").read_text())
    assert sorted(lines[-1]["val_per_case"]) == sorted(split["val"])
    assert load_checkpoint(run / "checkpoint.pt")["state"]["global_step"] == 6
    model, _ = load_model(run / "last")
    assert not any(k.startswith("module.") for k in model.state_dict())


def test_two_d_run(cache, tmp_path):
    result = train(cache, tmp_path / "r2d", tiny("model.spatial_dims=2", "patch_size=[32,32]", "batch_dice=true"))
    assert result.finished and set(result.last_val) == {"WT", "TC", "ET"}
    model, _ = load_model(tmp_path / "r2d" / "best")
    assert model.config.spatial_dims == 2


def test_fine_tuning_continues_a_fold_and_refuses_to_validate_on_its_training_cases(cache, tmp_path):
    first = train(cache, tmp_path / "fold0", tiny("epochs=1", "steps_per_epoch=1", "fold=0"))
    more = train(
        cache, tmp_path / "more", tiny("epochs=1", "steps_per_epoch=1", "fold=0", f"init_from={first.run_dir}/last")
    )
    assert (
        more.finished
        and json.loads((more.run_dir / "split.json").read_text())["val"]
        == json.loads((first.run_dir / "split.json").read_text())["val"]
    )
    with pytest.raises(BratsSegError, match="trained on this run's validation cases"):
        train(
            cache, tmp_path / "leak", tiny("epochs=1", "steps_per_epoch=1", "fold=1", f"init_from={first.run_dir}/last")
        )


def test_distillation_from_a_teacher_trains_and_refuses_a_teacher_that_saw_the_validation_cases(cache, tmp_path):
    teacher = train(cache, tmp_path / "teacher", tiny("epochs=1", "steps_per_epoch=1", "fold=0"))
    plain = train(cache, tmp_path / "plain", tiny("epochs=1", "steps_per_epoch=2", "fold=0"))
    taught = train(
        cache,
        tmp_path / "taught",
        tiny("epochs=1", "steps_per_epoch=2", "fold=0", f"teacher={teacher.run_dir}/last", "distill_weight=0.5"),
    )
    assert taught.finished

    def loss(run):
        return json.loads((run.run_dir / "metrics.jsonl").read_text().splitlines()[-1])["train_loss"]

    assert loss(taught) != loss(plain)  # the same seed and patches: only the distillation term differs
    with pytest.raises(BratsSegError, match="teacher was trained on this run's validation cases"):
        train(
            cache, tmp_path / "leak", tiny("epochs=1", "steps_per_epoch=1", "fold=1", f"teacher={teacher.run_dir}/last")
        )
    with pytest.raises(BratsSegError, match="distill_weight"):
        tiny("distill_weight=1.5")


def test_tumour_free_samples_train_and_are_recorded(cache, tmp_path):
    plain = train(cache, tmp_path / "plain", tiny("epochs=1", "steps_per_epoch=3", "fold=-1"))
    free = train(cache, tmp_path / "free", tiny("epochs=1", "steps_per_epoch=3", "fold=-1", "free_fraction=0.5"))
    assert free.finished
    assert yaml.safe_load((free.run_dir / "config.yaml").read_text())["free_fraction"] == 0.5
    assert load_model(free.run_dir / "last")[1].training.config["free_fraction"] == 0.5

    def loss(run):
        return json.loads((run.run_dir / "metrics.jsonl").read_text().splitlines()[-1])["train_loss"]

    assert loss(free) != loss(plain)  # the same seed: some samples are tumour-free brains with empty targets
    with pytest.raises(BratsSegError, match="free_fraction"):
        tiny("free_fraction=1.0")


def test_region_weight_settings_are_checked():
    from bratsseg.engine.config import load_train_config

    for key in ("fg_region_weights", "region_loss_weights"):
        assert getattr(load_train_config(None, [f"{key}=[1,1,2]"]), key) == (1.0, 1.0, 2.0)
        for bad in ("[0,0,0]", "[1,-1,1]", "[1,1]"):
            with pytest.raises(BratsSegError, match=key):
                load_train_config(None, [f"{key}={bad}"])


def test_region_weights_reach_the_loss_and_the_sampler(cache, tmp_path):
    def loss(*extra):
        run = train(cache, tmp_path / "-".join(extra or ("plain",)), tiny("epochs=1", "steps_per_epoch=2", *extra))
        return json.loads((run.run_dir / "metrics.jsonl").read_text().splitlines()[-1])["train_loss"]

    plain = loss()
    assert loss("region_loss_weights=[0,0,1]") != plain  # the same patches, another loss
    assert loss("fg_region_weights=[0,0,1]") != plain  # the same loss, other patches
    assert loss("region_loss_weights=[2,2,2]") == plain  # equal weights: the plain loss

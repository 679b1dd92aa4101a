"""Seconds per training step: our default 3-D U-Net vs MONAI's SegResNet (BraTS tutorial config), same patch.

    python benchmarks/train_bench.py [--cache CACHE] [--patch 96] [--batch 2] [--steps 5] [--threads 2]

Both networks take the same random batch ``(batch, 4, patch, patch, patch)`` and do forward, BCE + Dice
loss, backward and an AdamW step, in one process with the same allocator settings. Then our real training
loop runs a short epoch on a cache (the shared real cases if present, else synthetic ones made here) and
reports the fraction of step time spent waiting for data (target: under 10%).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import SHARED_BRATS
from monai.networks.nets import SegResNet

from bratsseg.data.preprocess import preprocess_dataset
from bratsseg.data.synthetic import make_synthetic_dataset
from bratsseg.engine.config import TrainConfig, load_train_config
from bratsseg.engine.trainer import train
from bratsseg.losses import RegionLoss
from bratsseg.models import UNet, count_parameters
from bratsseg.runtime import tune_allocator


def step_seconds(model: torch.nn.Module, batch: torch.Tensor, target: torch.Tensor, steps: int) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = RegionLoss()
    times = []
    for i in range(steps + 2):  # two warm-up steps
        t0 = time.perf_counter()
        out = model(batch)
        loss = loss_fn(out, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, help="a bratsseg cache for the data-loading measurement")
    parser.add_argument("--patch", type=int, default=96)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--loader-steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    tune_allocator()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = (args.batch, 4, args.patch, args.patch, args.patch)
    batch = torch.randn(shape)
    target = (torch.rand(args.batch, 3, *shape[2:]) > 0.9).float()

    ours_cfg = TrainConfig().model
    nets = {
        f"bratsseg UNet {list(ours_cfg.widths)}": UNet(ours_cfg),
        "MONAI SegResNet (16, [1,2,2,4])": SegResNet(
            spatial_dims=3,
            init_filters=16,
            in_channels=4,
            out_channels=3,
            blocks_down=(1, 2, 2, 4),
            blocks_up=(1, 1, 1),
        ),
    }
    print(f"training step: batch {shape}, {args.threads} threads, forward + loss + backward + AdamW")
    print(f"{'network':<40}{'params':>10}{'s/step':>9}{'vs ours':>9}")
    results = {}
    for name, net in nets.items():
        results[name] = step_seconds(net.train(), batch, target, args.steps)
    ours = next(iter(results.values()))
    for name, net in nets.items():
        print(f"{name:<40}{count_parameters(net):>10,}{results[name]:>9.3f}{results[name] / ours:>8.2f}x")

    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache
        if cache is None:
            raw = SHARED_BRATS if SHARED_BRATS.is_dir() else Path(tmp) / "raw"
            if raw != SHARED_BRATS:
                make_synthetic_dataset(raw, 4, size="small")
            cache = Path(tmp) / "cache"
            preprocess_dataset(raw, cache, workers=2)
        patch = ",".join([str(args.patch)] * 3)
        overrides = [f"steps_per_epoch={args.loader_steps}", f"batch_size={args.batch}", f"patch_size=[{patch}]"]
        cfg = load_train_config(None, ["epochs=1", "fold=-1", *overrides])
        train(cache, Path(tmp) / "run", cfg)
        record = json.loads((Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    wait = record["data_wait_fraction"]
    print(
        f"real loop on {cache if args.cache else 'a fresh cache'}: {args.loader_steps} steps, "
        f"{record['epoch_seconds'] / args.loader_steps:.3f} s/step, data wait {100 * wait:.1f}% of step time "
        f"(target < 10%: {'met' if wait < 0.10 else 'NOT met'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`bratsseg train` and `demo`: one training run; the whole job on synthetic data."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bratsseg.cli.common import threads_arg as _threads


def cmd_train(args: argparse.Namespace) -> int:
    from bratsseg.engine.config import load_train_config
    from bratsseg.engine.trainer import train
    from bratsseg.runtime import tune_allocator

    tune_allocator()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    config = None
    if args.config or args.set or not args.resume:
        config = load_train_config(args.config, args.set)
    from bratsseg.engine.distributed import init_distributed, shutdown_distributed

    try:
        result = train(
            data=args.data,
            run_dir=args.output,
            config=config,
            resume=args.resume,
            device=args.device,
            time_limit_s=args.time_limit * 60 if args.time_limit else None,
            max_steps=args.max_steps,
            progress=True,
        )
        if init_distributed(args.device).is_main:
            status = "finished" if result.finished else "stopped early (continue with --resume)"
            val = ", ".join(f"{k} {v:.3f}" for k, v in result.last_val.items()) or "no validation this session"
            print(
                f"{args.output}: {status} after {result.state.epoch} epoch(s), {result.state.global_step} steps; "
                f"last validation Dice: {val}"
            )
    finally:
        shutdown_distributed()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import time

    from bratsseg.demo import DemoConfig, run_demo
    from bratsseg.runtime import tune_allocator

    tune_allocator()
    t0 = time.perf_counter()
    report = run_demo(args.output, DemoConfig(threads=args.threads))
    out = args.output
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s. Everything is in {out}/:")
    print(f"  report      {report} and {out}/report.html (one self-contained page)")
    print(f"  models      {out}/run/best (PyTorch), {out}/model-pruned.onnx (pruned, fp16 ONNX)")
    print(f"  prediction  {out}/predictions/")
    print(f"  figures     {out}/training.png, {out}/sweep.png, {out}/compress/pareto.png, {out}/held_out.png")
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("train", help="train a 2-D or 3-D U-Net on a preprocessed cache (also under torchrun)")
    p.add_argument("--data", type=Path, required=True, help="cache folder made by `bratsseg preprocess`")
    p.add_argument("-o", "--output", type=Path, required=True, help="run folder")
    p.add_argument("--config", type=Path, help="YAML file of TrainConfig settings")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set lr=1e-3 --set model.widths=[8,16,32,64]",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=_threads, help="CPU threads for PyTorch (default: PyTorch's choice)")
    p.add_argument("--time-limit", type=float, metavar="MINUTES", help="stop (resumably) after this long")
    p.add_argument("--max-steps", type=int, help="stop (resumably) after this many steps in all")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help="the whole job on built-in synthetic data (a few minutes, no download)")
    p.add_argument("-o", "--output", type=Path, default=Path("bratsseg-demo"), help="folder (default bratsseg-demo)")
    p.add_argument("--threads", type=_threads, default=2, help="CPU threads (default 2)")
    p.set_defaults(func=cmd_demo)

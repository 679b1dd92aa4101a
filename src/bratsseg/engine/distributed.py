"""One code path for 1 or N processes: ``torchrun`` sets RANK/WORLD_SIZE and we join its process group.

NCCL on GPUs, gloo on the CPU. Only rank 0 logs and writes; every rank runs the same loop. PyTorch is imported
only where it is needed: a single process on the CPU (``predict`` on the runtime install) runs without it, with
``device`` the string ``"cpu"``.
"""

from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass
from typing import Any

from bratsseg.errors import BratsSegError
from bratsseg.extras import missing, require


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: Any  # a torch.device, or "cpu" where PyTorch is not installed

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (on every rank)."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def any(self, flag: bool) -> bool:
        """True on every rank when any rank says True (to stop together)."""
        if not self.distributed:
            return flag
        import torch
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0], device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)


def resolve_device(name: str = "auto", local_rank: int = 0) -> Any:
    """``auto``/``cpu``/``cuda`` -> a ``torch.device`` (``"cpu"`` where PyTorch is not installed)."""
    if name in ("auto", "cpu") and missing("torch"):
        return "cpu"
    if name == "cuda":
        require("--device cuda", "torch")
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise BratsSegError("--device cuda asked for, but PyTorch sees no CUDA GPU")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name != "cpu":
        raise BratsSegError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device("cpu")


def init_distributed(device: str = "auto") -> DistContext:
    """Join torchrun's process group if there is one (idempotent); otherwise a single-process context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world == 1:
        return DistContext(rank, world, local_rank, dev)
    require("a multi-process (torchrun) run", "torch")
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend)
    return DistContext(rank, world, local_rank, dev)


def _cuda_impossible() -> bool:
    """True where no CUDA device can exist, known without importing PyTorch: macOS, or Linux without an NVIDIA
    device node."""
    if sys.platform == "darwin":
        return True
    return sys.platform.startswith("linux") and not glob.glob("/dev/nvidia[0-9]*")


def inference_context(device: str = "auto") -> DistContext:
    """:func:`init_distributed` for inference commands, which also run on the runtime install: a single process
    whose ``device`` is the string ``"cpu"`` or ``"cuda"`` (PyTorch is not imported to find out where no GPU can
    exist); under ``torchrun``, the process group as usual."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return init_distributed(device)
    if device not in ("auto", "cpu", "cuda"):
        raise BratsSegError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cpu" or (device == "auto" and (missing("torch") or _cuda_impossible())):
        return DistContext(0, 1, 0, "cpu")
    return DistContext(0, 1, 0, str(resolve_device(device)))


def shutdown_distributed() -> None:
    """Leave the process group, if this process joined one (never imports PyTorch to find out)."""
    dist = sys.modules.get("torch.distributed")
    if dist is None:
        return
    if dist.is_initialized():
        dist.destroy_process_group()

"""The U-Net's architecture as a frozen dataclass: no PyTorch needed to read, validate or write it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from bratsseg.errors import BratsSegError

_NORMS = ("instance", "group", "batch")
_SKIPS = ("concat", "add")


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a :class:`UNet`. Round-trips through :meth:`to_dict` / :meth:`from_dict` (JSON/YAML)."""

    spatial_dims: int = 3
    in_channels: int = 4
    out_channels: int = 3
    widths: tuple[int, ...] = (8, 16, 32, 64, 128)
    norm: str = "instance"
    negative_slope: float = 0.01  # LeakyReLU
    deep_supervision: bool = False
    skip: str = "concat"  # how decoder[i] merges the skip: "concat" (classic U-Net) or "add" (cheaper)
    top_convs: int = 2  # convolutions in encoder[0] and in decoder[0] (the finest level): 2, or 1 (cheaper)
    # > 0: a refinement stage (cascade). The last ``prior_channels`` input channels are a previous stage's region
    # probabilities, and the network's logits are added to their logit: it learns a correction of that stage,
    # and a network whose output is 0 returns the previous stage's probabilities unchanged.
    prior_channels: int = 0

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise BratsSegError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if not 2 <= len(self.widths) <= 6:
            raise BratsSegError(f"widths must give 2 to 6 levels (4 or 5 usual), got {list(self.widths)}")
        if any(int(w) < 1 for w in self.widths):
            raise BratsSegError(f"every width must be >= 1, got {list(self.widths)}")
        if self.norm not in _NORMS:
            raise BratsSegError(f"norm must be one of {_NORMS}, got {self.norm!r}")
        if self.skip not in _SKIPS:
            raise BratsSegError(f"skip must be one of {_SKIPS}, got {self.skip!r}")
        if self.top_convs not in (1, 2):
            raise BratsSegError(f"top_convs must be 1 or 2, got {self.top_convs}")
        if self.prior_channels and (
            self.prior_channels != self.out_channels or self.in_channels <= self.prior_channels
        ):
            raise BratsSegError(
                f"prior_channels must be 0 or out_channels ({self.out_channels}) with in_channels above it, "
                f"got prior_channels {self.prior_channels}, in_channels {self.in_channels}"
            )
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))

    @property
    def levels(self) -> int:
        return len(self.widths)

    @property
    def divisor(self) -> int:
        """Input sizes are padded up to a multiple of this (one halving per level below the first)."""
        return int(2 ** (self.levels - 1))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UNetConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise BratsSegError(f"unknown model config keys {sorted(unknown)}; known: {sorted(known)}")
        kwargs: dict[str, Any] = {k: (tuple(v) if k == "widths" else v) for k, v in d.items()}
        return cls(**kwargs)

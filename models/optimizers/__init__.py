"""The ZNorm optimizer family and the baselines of the comparison, with a name registry."""

from models.optimizers.registry import OPTIMIZER_NAMES, build_optimizer
from models.optimizers.transformed import (
    ClipAdam,
    GCAdam,
    ZNormAdam,
    ZNormAdamW,
    ZNormSGD,
    centralize_,
    with_znorm,
)
from models.optimizers.znorm import ZNormOptions, znorm_, znorm_reference_

__all__ = [
    "OPTIMIZER_NAMES",
    "ClipAdam",
    "GCAdam",
    "ZNormAdam",
    "ZNormAdamW",
    "ZNormOptions",
    "ZNormSGD",
    "build_optimizer",
    "centralize_",
    "with_znorm",
    "znorm_",
    "znorm_reference_",
]

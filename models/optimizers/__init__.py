"""The ZNorm family and the baselines of the comparison: stock ``torch.optim`` optimizers with a
gradient transform in front (a step pre-hook), and a name registry."""

from models.optimizers.registry import OPTIMIZER_NAMES, build_optimizer
from models.optimizers.transformed import (
    centralize_,
    with_grad_clipping,
    with_gradient_centralization,
    with_znorm,
)
from models.optimizers.znorm import ZNormOptions, znorm_, znorm_reference_

__all__ = [
    "OPTIMIZER_NAMES",
    "ZNormOptions",
    "build_optimizer",
    "centralize_",
    "with_grad_clipping",
    "with_gradient_centralization",
    "with_znorm",
    "znorm_",
    "znorm_reference_",
]

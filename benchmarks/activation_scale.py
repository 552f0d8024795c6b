"""Activation scale of the ResNet-50-UNet: the variance each BatchNorm layer sees, at
initialisation and in trained checkpoints, on real slices. One table.

    python benchmarks/activation_scale.py --data-dir ../shared/data/lgg/kaggle_3m \\
        [--checkpoint CKPT ...] [--slices 8]

Columns: MONAI's default initialisation; the same with the last BatchNorm of every residual
bottleneck zero-initialised (Goyal et al. 2017, "zero-init residual"); then each checkpoint
(default: the bundled model). Rows: the encoder's five outputs and the BatchNorm inputs of the
first two decoder blocks, where a trained network's variance reaches 1e6-1e8. BatchNorm makes
the layer before it scale-invariant, so the scale costs nothing in float32 or bfloat16 but
overflows float16 (65504), the cause of the 0.1.0/0.2.0 releases' infinite running variance.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.dataset import SliceDataset  # noqa: E402
from data.kaggle3m import scan_dataset  # noqa: E402
from data.preprocessing import PreprocessingConfig  # noqa: E402
from models import BUNDLED_CHECKPOINT  # noqa: E402
from models.checkpoint import load_checkpoint  # noqa: E402
from models.network import ModelConfig, build_model  # noqa: E402

PROBED = ("decoder.blocks.0.convs.conv_0.adn.N", "decoder.blocks.0.convs.conv_1.adn.N",
          "decoder.blocks.1.convs.conv_0.adn.N")


@torch.no_grad()
def variances(model: torch.nn.Module, images: torch.Tensor) -> dict[str, float]:
    """Mean per-channel variance of each encoder output and of the probed BatchNorm inputs."""
    model = model.float().eval()
    out: dict[str, float] = {}
    hooks = []
    for name in PROBED:
        def hook(_: torch.nn.Module, inputs: tuple[torch.Tensor, ...], __: torch.Tensor,
                 name: str = name) -> None:
            out[f"input of {name}"] = inputs[0].var(dim=(0, 2, 3)).mean().item()
        hooks.append(model.get_submodule(name).register_forward_hook(hook))
    for level, features in enumerate(model.encoder(images)):
        out[f"encoder output {level} ({features.shape[1]} ch)"] = (
            features.var(dim=(0, 2, 3)).mean().item())
    model(images)
    for handle in hooks:
        handle.remove()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True, help="kaggle_3m folder")
    parser.add_argument("--checkpoint", type=Path, action="append",
                        help="checkpoint(s) to probe (default: the bundled model)")
    parser.add_argument("--slices", type=int, default=8, help="slices, evenly spaced")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    dataset = SliceDataset(scan_dataset(args.data_dir)[:4], PreprocessingConfig())
    step = max(1, len(dataset) // args.slices)
    images = torch.stack([dataset[i]["image"] for i in range(0, len(dataset), step)][:args.slices])

    columns: dict[str, Callable[[], torch.nn.Module]] = {
        "init": build_model,
        "init, zero-init residual": lambda: build_model(ModelConfig(zero_init_residual=True)),
    }
    for path in args.checkpoint or [BUNDLED_CHECKPOINT]:
        label = f"{path.parent.name}/{path.stem}"  # runs' files share names (last, best)
        columns[label] = lambda path=path: load_checkpoint(path)[0]
    table = {label: variances(make(), images) for label, make in columns.items()}
    rows = list(next(iter(table.values())))
    print(f"mean per-channel variance over {len(images)} real slices")
    print(f"| {'layer':46} | " + " | ".join(f"{c[:24]:>24}" for c in table) + " |")
    print(f"|{'-' * 48}|" + "|".join("-" * 25 + ":" for _ in table) + "|")
    for row in rows:
        print(f"| {row:46} | " + " | ".join(f"{table[c][row]:>24.3g}" for c in table) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

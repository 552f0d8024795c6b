"""``build_model``: the MONAI FlexibleUNet it wraps, with a decoder that stays in bf16 under
autocast; outputs and checkpoints are the same as the stock network's."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import FlexibleUNet

from models import ModelConfig, build_model


def _stock(cfg: ModelConfig) -> torch.nn.Module:
    return FlexibleUNet(
        in_channels=cfg.in_channels, out_channels=cfg.out_channels, backbone=cfg.backbone,
        pretrained=False, decoder_channels=cfg.decoder_channels, spatial_dims=cfg.spatial_dims,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    cfg = ModelConfig(backbone="resnet18")
    torch.manual_seed(0)
    ours = build_model(cfg).eval()
    stock = _stock(cfg).eval()
    stock.load_state_dict(ours.state_dict())  # strict: the same parameter names
    return ours, stock


def test_state_dict_keys_are_the_stock_networks(pair) -> None:
    ours, stock = pair
    assert list(ours.state_dict()) == list(stock.state_dict())


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_outputs_equal_the_stock_network(pair, autocast: bool) -> None:
    ours, stock = pair
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        a, b = ours(x), stock(x)
    assert a.shape == (2, 1, 64, 64)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_decoder_concatenates_in_bf16_under_autocast(pair) -> None:
    """The point of ``InputDtype``: no float32 copy of the decoder's feature maps."""
    ours, stock = pair
    seen: dict[str, list[torch.dtype]] = {"ours": [], "stock": []}

    def record(key: str):
        def hook(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            seen[key].append(args[0].dtype)

        return hook

    handles = [block.convs.register_forward_pre_hook(record(key))
               for key, net in (("ours", ours), ("stock", stock))
               for block in net.decoder.blocks]  # fmt: skip
    try:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            ours(torch.randn(1, 3, 64, 64))
            stock(torch.randn(1, 3, 64, 64))
    finally:
        for handle in handles:
            handle.remove()
    assert seen["ours"] and set(seen["ours"]) == {torch.bfloat16}
    assert torch.float32 in seen["stock"]  # what the stock decoder does, and we avoid


def test_input_sides_must_be_multiples_of_32(pair) -> None:
    ours, _ = pair
    with torch.inference_mode(), pytest.raises(RuntimeError):
        ours(torch.randn(1, 3, 48, 48))


def test_group_norm_decoder_has_no_running_statistics_and_round_trips(tmp_path) -> None:
    from data.preprocessing import PreprocessingConfig
    from models.card import ModelCard
    from models.checkpoint import load_checkpoint, save_checkpoint

    cfg = ModelConfig(backbone="resnet18", decoder_norm="group")
    torch.manual_seed(0)
    net = build_model(cfg).eval()
    decoder_norms = [m for m in net.decoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    groups = [m for m in net.decoder.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert not decoder_norms and len(groups) == 10  # two per decoder block
    assert all(m.num_groups == 8 for m in groups)
    path = tmp_path / "gn.safetensors"
    save_checkpoint(path, net, ModelCard(name="gn", version="0", model=cfg,
                                            preprocessing=PreprocessingConfig()))
    loaded, card = load_checkpoint(path)
    assert card.model.decoder_norm == "group"
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.eval()(x), net(x), rtol=1e-4, atol=1e-5)


def test_zero_init_residual_starts_every_bottleneck_as_the_identity() -> None:
    torch.manual_seed(0)
    net = build_model(ModelConfig(zero_init_residual=True)).eval()
    last = [m.bn3 for m in net.encoder.modules() if hasattr(m, "bn3")]
    assert len(last) == 16  # resnet50: 3 + 4 + 6 + 3 bottlenecks
    assert all(bool((bn.weight == 0).all()) for bn in last)
    block = net.encoder.layer2[1]  # no downsample: out = relu(x + 0)
    x = torch.randn(1, 512, 8, 8).relu()
    with torch.inference_mode():
        torch.testing.assert_close(block(x), x)

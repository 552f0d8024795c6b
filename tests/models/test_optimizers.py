"""The ZNorm family: the maths, equality with stock optimizers on transformed gradients, and the
optimizer contract (state_dict, schedulers, GradScaler, closure, grad=None, sparse, registry)."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from models.optimizers import (
    OPTIMIZER_NAMES,
    ZNormOptions,
    build_optimizer,
    centralize_,
    with_grad_clipping,
    with_gradient_centralization,
    with_znorm,
    znorm_,
    znorm_reference_,
)
from models.optimizers import znorm as znorm_module

SHAPES = [(64, 3, 7, 7), (256, 128, 3, 3), (300, 40), (1, 70000), (17,), (1,), (5, 1, 1, 1)]


def znorm_adam(params, **options) -> torch.optim.Optimizer:
    return build_optimizer("znorm-adam", params, **options)


def _grads(seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    grads = [torch.randn(s, generator=gen) * (i + 1) * 1e-3 for i, s in enumerate(SHAPES)]
    grads[1] += 0.5  # a large mean against the std: the ill-conditioned case for one-pass stats
    return grads


ALL_OPTIONS = [
    dict(per_channel=pc, include_1d=i1, unbiased=ub, eps=eps)
    for pc, i1, ub, eps in itertools.product([False, True], [False, True], [True, False], [1e-8])
] + [dict(per_channel=False, include_1d=False, unbiased=True, eps=1e-3)]


def _option_id(opts: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in opts.items())


@pytest.mark.parametrize("opts", ALL_OPTIONS, ids=_option_id)
def test_fast_path_equals_reference(opts: dict) -> None:
    raw, fast, ref = _grads(), _grads(), _grads()
    znorm_(fast, **opts)
    znorm_reference_(ref, ZNormOptions(**opts))
    for g, f, r in zip(raw, fast, ref, strict=True):
        # float32 inputs carry ~1 ulp of |mean|; relative to the std that is the best possible.
        conditioning = (g.mean().abs() / g.std()).item() if g.numel() > 1 else 0.0
        atol = 1e-5 + 4 * torch.finfo(torch.float32).eps * conditioning
        torch.testing.assert_close(f, r, rtol=1e-5, atol=atol)


def test_zscored_tensors_have_mean_0_std_1() -> None:
    grads = _grads()
    znorm_(grads)
    for g, shape in zip(grads, SHAPES, strict=True):
        if len(shape) >= 2 and g.numel() > 1:
            assert abs(g.mean().item()) < 1e-5
            assert g.std().item() == pytest.approx(1.0, abs=1e-4)


def test_per_channel_statistics() -> None:
    g = torch.randn(8, 4, 3, 3) * torch.arange(1, 9).view(8, 1, 1, 1) + 3.0
    znorm_([g], per_channel=True)
    per_channel = g.flatten(1)
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(per_channel.std(1), torch.ones(8), atol=1e-4, rtol=0)


def test_population_std_option() -> None:
    g = torch.randn(50, 7)
    znorm_([g], unbiased=False)
    assert g.std(correction=0).item() == pytest.approx(1.0, abs=1e-5)
    assert g.std(correction=1).item() != pytest.approx(1.0, abs=1e-3)


def test_default_leaves_1d_and_single_elements_alone() -> None:
    bias, scalar, weight = torch.randn(10) + 2.0, torch.tensor([3.0]), torch.randn(4, 4)
    bias0, scalar0 = bias.clone(), scalar.clone()
    znorm_([bias, scalar, weight])
    assert torch.equal(bias, bias0) and torch.equal(scalar, scalar0)
    znorm_([bias, scalar], include_1d=True)
    assert abs(bias.mean().item()) < 1e-6 and torch.equal(scalar, scalar0)


@pytest.mark.parametrize("impl", [znorm_, lambda g, **k: znorm_reference_(g, ZNormOptions(**k))])
@pytest.mark.parametrize("per_channel", [False, True])
def test_constant_gradient_gives_zeros_not_nan(impl, per_channel: bool) -> None:
    grads = [torch.full((1000, 3), 0.1), torch.zeros(4, 4), torch.full((3, 5), -7.25)]
    impl(grads, per_channel=per_channel)
    for g in grads:
        assert torch.isfinite(g).all()
        assert torch.count_nonzero(g) == 0


def test_bad_options_raise_value_error() -> None:
    with pytest.raises(ValueError, match="eps"):
        znorm_([torch.randn(3, 3)], eps=-1.0)
    with pytest.raises(ValueError, match="eps must be a number >= 0, got -1.0"):
        znorm_adam([torch.nn.Parameter(torch.randn(2, 2))], znorm_eps=-1.0)
    with pytest.raises(ValueError, match="eps must be a number >= 0, got True"):
        znorm_adam([torch.nn.Parameter(torch.randn(2, 2))], znorm_eps=True)
    with pytest.raises(ValueError, match="per_channel must be True or False"):
        znorm_adam([torch.nn.Parameter(torch.randn(2, 2))], znorm_per_channel=1)
    with pytest.raises(ValueError, match="learning rate"):
        znorm_adam([torch.nn.Parameter(torch.randn(2, 2))], lr=-1.0)


# --- half-precision gradients --------------------------------------------------------------------

HALF = [torch.bfloat16, torch.float16]
HALF_SHAPES = [(256, 64, 3, 3), (300, 40), (3 * 65536 + 5,), (8, 5, 3, 3)]
"""A tensor of several 65536-element chunks among them (the fast path's sum-of-squares chunks)."""


def _half_grads(dtype: torch.dtype, conditioning: float, seed: int = 0) -> list[torch.Tensor]:
    """Gradients with std 1e-3 and |mean| = ``conditioning`` * std, rounded to ``dtype``."""
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(s, generator=gen) * 1e-3 + conditioning * 1e-3 * (-1) ** i).to(dtype)
        for i, s in enumerate(HALF_SHAPES)
    ]


def _half_tolerance(dtype: torch.dtype, raw: torch.Tensor) -> dict[str, float]:
    """How far the fast path may be from the reference on z-scored ``raw`` (a ``dtype`` tensor).

    The reference rounds the exact (float64) value to ``dtype`` once: within half an ulp, i.e.
    ``eps / 2`` relative. The fast path's float64 statistics are as good; it forms
    ``(g - mean) * scale`` in float32 (mean rounded to float32: ``2**-24 * |mean| / std`` absolute
    in z-scored units, plus two float32 roundings) and rounds that to ``dtype``: so the two differ
    by at most one ``dtype`` ulp (``eps`` relative) plus the float32 error (absolute).
    Statistics computed in half precision miss this by orders of magnitude (30% of the std at
    |mean| / std = 10).
    """
    g = raw.double()
    conditioning = (g.mean().abs() / g.std()).item()
    return dict(
        rtol=torch.finfo(dtype).eps,
        atol=4 * torch.finfo(torch.float32).eps * (1.0 + conditioning),
    )


@pytest.mark.parametrize("conditioning", [0.0, 10.0, 500.0])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_half_precision_fast_path_equals_float64_reference(
    dtype: torch.dtype, per_channel: bool, conditioning: float
) -> None:
    raw = _half_grads(dtype, conditioning)
    fast, ref = [g.clone() for g in raw], [g.clone() for g in raw]
    znorm_(fast, per_channel=per_channel)
    znorm_reference_(ref, ZNormOptions(per_channel=per_channel))
    for g, f, r in zip(raw, fast, ref, strict=True):
        assert f.dtype == dtype
        torch.testing.assert_close(f.float(), r.float(), **_half_tolerance(dtype, g))
    if not per_channel and conditioning == 10.0:  # the case: std 1e-3, not 1.3e-3
        for f in fast:
            if f.dim() >= 2:  # 1-D tensors are left alone by default
                assert f.double().std().item() == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_half_precision_moments_are_those_of_the_float64_values(dtype: torch.dtype) -> None:
    """``torch_moments`` of half-precision tensors: the sums of their exact values (float64)."""
    grads = _half_grads(dtype, 10.0)
    sums, sumsq = znorm_module.torch_moments(grads)
    torch.testing.assert_close(sums, torch.stack([g.double().sum() for g in grads]))
    torch.testing.assert_close(sumsq, torch.stack([g.double().square().sum() for g in grads]))


@pytest.mark.parametrize("fused", [None, False], ids=["default", "fused=False"])
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_znorm_adam_on_half_precision_params_equals_reference_then_adam(
    dtype: torch.dtype, fused: bool | None
) -> None:
    """ZNorm-Adam on half-precision params equals the float64 reference transform followed by
    stock Adam (same fused choice: torch's fused Adam where the registry picks it)."""
    gen = torch.Generator().manual_seed(7)
    ours = [torch.nn.Parameter(torch.randn(s, generator=gen).to(dtype)) for s in HALF_SHAPES]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    # Adam's eps 1e-8 underflows in float16 state (stock Adam then divides 0 by 0): 1e-3.
    lr, steps, adam_eps = 1e-2, 3, 1e-3
    opt = znorm_adam(ours, lr=lr, eps=adam_eps, **({} if fused is None else {"fused": fused}))
    assert opt.param_groups[0]["fused"] is (fused is None)
    stock = torch.optim.Adam(ref, lr=lr, eps=adam_eps, fused=fused is None)
    for step in range(steps):
        grads = _half_grads(dtype, (0.0, 10.0, 500.0)[step], seed=step)
        for a, b, g in zip(ours, ref, grads, strict=True):
            a.grad, b.grad = g.clone(), g.clone()
        opt.step()
        znorm_reference_([b.grad for b in ref])
        stock.step()
    # The z-scored gradients may differ by one ulp of dtype (see _half_tolerance): each step moves
    # a parameter by at most ~lr * eps more, and may round it one ulp (eps relative) the other way.
    eps = torch.finfo(dtype).eps
    for a, b in zip(ours, ref, strict=True):
        assert a.dtype == dtype
        torch.testing.assert_close(
            a.float(), b.float(), rtol=steps * eps, atol=steps * 2 * lr * eps
        )


# --- optimizers equal the stock update on transformed gradients --------------------------------


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 4),
    )  # fmt: skip


def _backward(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(6, 3, 8, 8, generator=gen), torch.randn(6, 4, generator=gen)
    model.zero_grad(set_to_none=True)
    torch.nn.functional.mse_loss(model(x), y).backward()


def _run_pair(ours_factory, stock_factory, transform, steps: int = 4,
              channels_last: bool = False) -> None:
    a, b = _model(), _model()
    if channels_last:
        a, b = (m.to(memory_format=torch.channels_last) for m in (a, b))
    ours, stock = ours_factory(a.parameters()), stock_factory(b.parameters())
    for step in range(steps):
        _backward(a, step)
        _backward(b, step)
        ours.step()
        with torch.no_grad():
            transform([p.grad for p in b.parameters() if p.grad is not None])
        stock.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


ADAM_CASES = [
    dict(),
    dict(weight_decay=0.1),
    dict(weight_decay=0.1, decoupled_weight_decay=True),
    dict(znorm_per_channel=True, znorm_include_1d=True),
    dict(znorm_unbiased=False, znorm_eps=1e-4, amsgrad=True),
    dict(fused=True),
    dict(foreach=True),
    dict(foreach=False),
]


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("kw", ADAM_CASES, ids=str)
def test_znorm_adam_equals_adam_on_zscored_gradients(kw: dict, channels_last: bool) -> None:
    """Training runs the model channels-last: its conv weights are dense but not contiguous."""
    stock_kw = {k: v for k, v in kw.items() if not k.startswith("znorm_")}
    opts = ZNormOptions(
        per_channel=kw.get("znorm_per_channel", False),
        include_1d=kw.get("znorm_include_1d", False),
        unbiased=kw.get("znorm_unbiased", True),
        eps=kw.get("znorm_eps", 1e-8),
    )
    _run_pair(
        lambda p: znorm_adam(p, lr=1e-2, **kw),
        lambda p: torch.optim.Adam(p, lr=1e-2, **stock_kw),
        lambda g: znorm_reference_(g, opts),
        channels_last=channels_last,
    )


def test_ill_conditioned_and_constant_gradients_through_the_optimizer() -> None:
    """|mean| >> std (one-pass moments would cancel) and a constant gradient (becomes zeros).

    Compared with ``znorm_`` itself: at |mean| / std = 500 the float32 fast path is off the
    float64 reference by ~1e-4 std (bounded in ``test_fast_path_equals_reference``), enough to
    flip the sign of near-zero entries, which Adam's first steps amplify to +-lr."""
    gen = torch.Generator().manual_seed(3)
    shapes = [(300, 250), (65539,), (7, 3, 3, 3), (1,), (64, 32, 3, 3)]
    ours = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    opt = znorm_adam(ours, lr=1e-2, weight_decay=0.05, decoupled_weight_decay=True,
                     znorm_include_1d=True)
    stock = torch.optim.Adam(ref, lr=1e-2, weight_decay=0.05, decoupled_weight_decay=True)
    for step in range(3):
        for a in ours:
            a.grad = torch.randn(a.shape, generator=gen) * 1e-3 + 2e-4 * step
        ours[0].grad += 0.5
        ours[2].grad.fill_(0.25)
        for a, b in zip(ours, ref, strict=True):
            b.grad = a.grad.clone()
        opt.step()
        znorm_([b.grad for b in ref], include_1d=True)
        assert torch.count_nonzero(ref[2].grad) == 0 and abs(ref[0].grad.mean()) < 1e-4
        stock.step()
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_param_groups_keep_their_own_lr_and_znorm_options() -> None:
    def groups(model: torch.nn.Module, **first: object) -> list[dict]:
        params = list(model.parameters())
        return [{"params": params[:3], "lr": 1e-2, **first}, {"params": params[3:], "lr": 1e-3}]

    a, b = _model(), _model()
    ours = znorm_adam(groups(a, znorm_include_1d=True))
    stock = torch.optim.Adam(groups(b))
    assert [g["znorm_include_1d"] for g in ours.param_groups] == [True, False]
    for step in range(3):
        _backward(a, step)
        _backward(b, step)
        ours.step()
        with torch.no_grad():
            for group, include_1d in zip(stock.param_groups, (True, False), strict=True):
                znorm_reference_([p.grad for p in group["params"]],
                                 ZNormOptions(include_1d=include_1d))
        stock.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def test_non_contiguous_parameters_equal_the_reference() -> None:
    weight = torch.nn.Parameter(torch.randn(6, 4).t())  # a transposed view: not contiguous
    ref = torch.nn.Parameter(weight.detach().clone())
    ours, stock = znorm_adam([weight], lr=0.1), torch.optim.Adam([ref], lr=0.1)
    weight.grad = torch.randn(6, 4).t()
    ref.grad = weight.grad.clone()
    ours.step()
    znorm_reference_([ref.grad])
    stock.step()
    torch.testing.assert_close(weight, ref)


def test_znorm_adamw_sgd_and_any_optimizer_equal_their_stock_optimizers() -> None:
    _run_pair(
        lambda p: build_optimizer("znorm-adamw", p, lr=1e-2, weight_decay=0.05),
        lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.05),
        znorm_reference_,
    )
    _run_pair(
        lambda p: build_optimizer("znorm-sgd", p, lr=1e-2),
        lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9),
        znorm_reference_,
    )
    _run_pair(
        lambda p: with_znorm(torch.optim.RMSprop(p, lr=1e-3)),
        lambda p: torch.optim.RMSprop(p, lr=1e-3),
        znorm_reference_,
    )


def test_transforms_are_hooks_on_the_stock_optimizer() -> None:
    params = [torch.nn.Parameter(torch.randn(2, 2))]
    opt = with_znorm(torch.optim.RMSprop(params), znorm_eps=1e-6)
    assert type(opt) is torch.optim.RMSprop and opt.defaults["znorm_eps"] == 1e-6
    assert opt.param_groups[0]["znorm_eps"] == 1e-6
    opt.add_param_group({"params": [torch.nn.Parameter(torch.randn(3, 3))]})
    assert opt.param_groups[1]["znorm_eps"] == 1e-6  # inherited from defaults
    with pytest.raises(ValueError, match="already has options"):
        with_znorm(opt)
    with pytest.raises(ValueError, match="torch.optim.Optimizer instance"):
        with_znorm(torch.optim.RMSprop)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="LBFGS"):
        with_znorm(torch.optim.LBFGS(params))
    with pytest.raises(ValueError, match="max_grad_norm"):
        with_grad_clipping(torch.optim.Adam(params), max_grad_norm=0)
    assert with_gradient_centralization(torch.optim.SGD(params, lr=0.1)).defaults[
        "gradient_centralization"
    ]


def test_baselines_equal_adam_on_their_transforms() -> None:
    _run_pair(lambda p: build_optimizer("gc-adam", p, lr=1e-2),
              lambda p: torch.optim.Adam(p, lr=1e-2), centralize_)

    def clip(grads: list[torch.Tensor]) -> None:
        total = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
        scale = min(1.0, 0.05 / (total.item() + 1e-6))
        for g in grads:
            g.mul_(scale)

    _run_pair(
        lambda p: build_optimizer("clip-adam", p, lr=1e-2, max_grad_norm=0.05),
        lambda p: torch.optim.Adam(p, lr=1e-2),
        clip,
    )


def test_gc_centralizes_per_output_channel() -> None:
    g = torch.randn(6, 4, 3, 3) + 5.0
    bias = torch.randn(6) + 5.0
    bias0 = bias.clone()
    centralize_([g, bias])
    torch.testing.assert_close(g.flatten(1).mean(1), torch.zeros(6), atol=1e-5, rtol=0)
    assert torch.equal(bias, bias0)


# --- the optimizer contract ------------------------------------------------------------------


def test_state_dict_round_trip_continues_identically() -> None:
    a = _model()
    opt = znorm_adam(a.parameters(), lr=1e-2, znorm_per_channel=True)
    for step in range(3):
        _backward(a, step)
        opt.step()
    b = copy.deepcopy(a)
    restored = znorm_adam(b.parameters(), lr=0.5)
    restored.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert restored.param_groups[0]["lr"] == 1e-2
    assert restored.param_groups[0]["znorm_per_channel"] is True  # from the state, not the call
    for step in range(3, 6):
        for model, optimizer in ((a, opt), (b, restored)):
            _backward(model, step)
            optimizer.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_a_state_without_znorm_options_takes_the_defaults() -> None:
    """A stock Adam state (no znorm_* keys in its groups) loads and steps with ZNorm."""
    a, b = _model(), _model()
    stock = torch.optim.Adam(a.parameters(), lr=1e-2)
    _backward(a, 0)
    stock.step()
    ours = znorm_adam(b.parameters(), lr=1e-2)
    ours.load_state_dict(copy.deepcopy(stock.state_dict()))
    b.load_state_dict(a.state_dict())
    assert "znorm_eps" not in ours.param_groups[0]
    _backward(a, 1)
    _backward(b, 1)
    ours.step()
    znorm_reference_([p.grad for p in a.parameters()])
    stock.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def test_scheduler_drives_the_learning_rate() -> None:
    model = _model()
    opt = znorm_adam(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.0 if step >= 1 else 1.0)
    _backward(model, 0)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == 0.0
    before = [p.detach().clone() for p in model.parameters()]
    _backward(model, 1)
    opt.step()
    for p, b in zip(model.parameters(), before, strict=True):
        torch.testing.assert_close(p, b)  # lr 0: Adam moves nothing


@pytest.mark.parametrize("name", ["znorm-adam", "znorm-adamw", "znorm-sgd", "gc-adam", "clip-adam"])
def test_grad_scaler_skips_the_step_on_inf(name: str) -> None:
    model = _model()
    opt = build_optimizer(name, model.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(6, 3, 8, 8), torch.randn(6, 4)
    scaler.scale(torch.nn.functional.mse_loss(model(x), y)).backward()
    next(model.parameters()).grad.view(-1)[0] = float("inf")
    scaler.step(opt)
    scaler.update()
    for p, b in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, b)
    assert scaler.get_scale() < 1024.0


@pytest.mark.parametrize("name", ["znorm-adam", "clip-adam"])
def test_grad_scaler_step_equals_unscaled_step(name: str) -> None:
    """GradScaler unscales before the transform, though fused Adam could take the scale itself
    (clipping a scaled gradient would clip too much)."""
    a, b = _model(), _model()
    opt_a, opt_b = (build_optimizer(name, m.parameters(), lr=1e-2, max_grad_norm=0.05)
                    if name == "clip-adam" else build_optimizer(name, m.parameters(), lr=1e-2)
                    for m in (a, b))
    assert opt_a.param_groups[0]["fused"] and not opt_a._step_supports_amp_scaling
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(6, 3, 8, 8, generator=gen), torch.randn(6, 4, generator=gen)
    scaler.scale(torch.nn.functional.mse_loss(a(x), y)).backward()
    scaler.step(opt_a)
    torch.nn.functional.mse_loss(b(x), y).backward()
    opt_b.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def test_params_without_grad_are_skipped() -> None:
    used, unused = torch.nn.Parameter(torch.randn(4, 4)), torch.nn.Parameter(torch.randn(4, 4))
    opt = znorm_adam([used, unused], lr=0.1)
    unused0 = unused.detach().clone()
    (used**2).sum().backward()
    opt.step()
    assert torch.equal(unused, unused0)
    assert unused not in opt.state and used in opt.state


def test_sparse_gradients_raise_a_clear_error() -> None:
    emb = torch.nn.Embedding(10, 4, sparse=True)
    opt = with_znorm(torch.optim.SGD(emb.parameters(), lr=0.1))
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        opt.step()


@pytest.mark.parametrize("keyword", [False, True], ids=["positional", "keyword"])
def test_closure_is_evaluated_once_before_the_transform(keyword: bool) -> None:
    """The gradients the closure computes are z-scored: the step equals one without a closure."""
    a, b = _model(), _model()
    opt_a, opt_b = znorm_adam(a.parameters(), lr=1e-2), znorm_adam(b.parameters(), lr=1e-2)
    calls = []

    def closure() -> float:
        calls.append(1)
        _backward(a, 0)
        return 1.5

    assert (opt_a.step(closure=closure) if keyword else opt_a.step(closure)) == 1.5
    assert len(calls) == 1
    _backward(b, 0)
    opt_b.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


# --- registry ------------------------------------------------------------------------------


def test_registry_names_and_errors() -> None:
    assert set(OPTIMIZER_NAMES) == {
        "adam", "adamw", "gc-adam", "clip-adam", "znorm-adam", "znorm-adamw", "znorm-sgd",
    }  # fmt: skip
    params = [torch.nn.Parameter(torch.randn(2, 2))]
    with pytest.raises(ValueError, match="choose one of: adam, adamw"):
        build_optimizer("lamb", params)
    with pytest.raises(ValueError, match="bad option"):
        build_optimizer("znorm-adam", params, momentum=0.9)
    with pytest.raises(ValueError, match="max_grad_norm"):
        build_optimizer("clip-adam", params, max_grad_norm=0)
    opt = build_optimizer(" ZNorm-Adam ", params)
    assert type(opt) is torch.optim.Adam and opt.defaults["znorm_eps"] == 1e-8


def test_registry_picks_torchs_fused_adam_unless_told_otherwise() -> None:
    def group(name: str, params: list, **kw: object) -> dict:
        return build_optimizer(name, params, **kw).param_groups[0]

    params = [torch.nn.Parameter(torch.randn(2, 2))]
    for name in ("adam", "adamw", "gc-adam", "clip-adam", "znorm-adam", "znorm-adamw"):
        assert group(name, params)["fused"] is True
    assert not group("znorm-adam", params, foreach=True)["fused"]
    assert not group("znorm-adam", params, fused=False)["fused"]
    assert not group("znorm-adam", [torch.zeros(2, 2, dtype=torch.complex64)])["fused"]
    assert not group("znorm-sgd", params)["fused"]  # SGD: torch's default
    model = _model()  # param groups given as generators are read once by the check, once by torch
    opt = build_optimizer("znorm-adam", [{"params": model[0].parameters()},
                                         {"params": model[4].parameters(), "lr": 0.1}])
    assert opt.param_groups[0]["fused"] and len(opt.param_groups[1]["params"]) == 2


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_loss_decreases_for_every_registry_name(name: str) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    x = torch.randn(128, 8)
    y = (x[:, :1] * 2 - x[:, 1:2]).tanh()
    opt = build_optimizer(name, net.parameters(), lr=1e-2)
    losses = []
    for _ in range(150):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], (name, losses[0], losses[-1])


def test_loading_state_into_a_used_optimizer_takes_effect() -> None:
    a = _model()
    opt = znorm_adam(a.parameters(), lr=1e-2)
    for step in range(2):
        _backward(a, step)
        opt.step()
    saved_opt = copy.deepcopy(opt.state_dict())
    b = copy.deepcopy(a)
    _backward(a, 2)
    opt.step()  # moves the moments on; the load below must bring them back
    a.load_state_dict(b.state_dict())
    opt.load_state_dict(saved_opt)
    fresh = znorm_adam(b.parameters(), lr=1e-2)
    fresh.load_state_dict(copy.deepcopy(saved_opt))
    for model, optimizer in ((a, opt), (b, fresh)):
        _backward(model, 3)
        optimizer.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)

"""The SAM-family optimizers against formulas worked out here, pytorch-optimizer and torch."""

import io
import math

import pytest
import pytorch_optimizer
import torch
from torch import nn

from trainables.errors import ConfigError
from trainables.optim import ASAM, ZSharp, create_optimizer, frozen_bn_stats, get_optimizer_info, list_bases, list_optimizers
from trainables.zfilter import FlatLayout, kth_smallest_by_partition, kth_smallest_by_topk, zsharp_masks
from trainables.step import optimizer_step

# Parametrised over the registry (a new optimizer is tested like the others); the
# mission's optimizers must be among them.
SAM_FAMILY = [n for n in list_optimizers() if get_optimizer_info(n).wrapper is not None]
PLAIN = [n for n in list_optimizers() if get_optimizer_info(n).wrapper is None]
COMPARED = {"sam", "asam", "fsam", "zsharp", "sgd", "adam", "adamw"}


class ConvBNNet(nn.Module):
    """Small conv + BN + linear model: 4-D, 2-D and 1-D parameters, BN weights and biases."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 5 * 5, classes)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def make_problem(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    model = ConvBNNet().to(dtype)
    x = torch.randn(16, 2, 5, 5, dtype=dtype)
    y = torch.randint(0, 3, (16,))
    return model, x, y


def forward(model, x, y):
    logits = model(x)
    return logits, nn.functional.cross_entropy(logits, y)


def backward(model, x, y):
    loss = forward(model, x, y)[1]
    loss.backward()
    return loss.detach()


def train_step(name, opt, model, x, y):
    """One step as the training loop takes it (trainables.step); the loss at the weights
    before the step. `.grad` must be empty on entry, as optimizer_step leaves it."""
    passes = get_optimizer_info(name).passes_per_step
    return optimizer_step(model, opt, lambda: forward(model, x, y), passes)[1]


def params_and_grads(model):
    named = [(n, p) for n, p in model.named_parameters()]
    return named, [p.detach().clone() for _, p in named], [p.grad.detach().clone() for _, p in named]


class Perturbation(list):
    """e measured as (w + e) - w, with the weights it was measured against."""

    def __init__(self, offsets, weights):
        super().__init__(offsets)
        self.weights = weights


def perturbation(opt, model):
    before = [p.detach().clone() for p in model.parameters()]
    opt.first_step()
    return Perturbation([p.detach() - b for p, b in zip(model.parameters(), before)], before)


def global_norm(tensors):
    return math.sqrt(sum(float((t.double() ** 2).sum()) for t in tensors))


def assert_rel_close(actual: Perturbation, expected, tol):
    """||actual - expected|| <= tol * ||expected||, plus the rounding of (w + e) - w itself
    (a few float64 ulps of |w|; it dominates where e is tiny, e.g. a conv bias before BN)."""
    for a, e, w in zip(actual, expected, actual.weights):
        bound = tol * float(e.norm()) + 4 * 2.0 ** -52 * float(w.norm())
        assert float((a - e).norm()) <= bound, f"error {float((a - e).norm()):.3g} > {bound:.3g}"


# ---- references, written from the papers' formulas (each class's docstring) ----------

def ref_sam(grads, rho):
    norm = global_norm(grads)
    return [rho * g / (norm + 1e-12) for g in grads]


def ref_asam(named, weights, grads, rho, eta):
    t = [w.abs() + eta if n.endswith("weight") else torch.ones_like(w)
         for (n, _), w in zip(named, weights)]
    norm = global_norm([ti * g for ti, g in zip(t, grads)])
    return [rho * ti * ti * g / (norm + 1e-16) for ti, g in zip(t, grads)]


def ref_zsharp(grads, rho, alpha):
    norm = global_norm(grads)
    out = []
    for g in grads:
        if g.ndim <= 1:
            out.append(rho * g / (norm + 1e-12))
            continue
        z = (g - g.mean()) / (g.std() + 1e-12)
        tau = torch.quantile(z.abs().flatten(), alpha)
        f = torch.where(z.abs() > tau, g, torch.zeros_like(g))
        fn = float(f.norm())
        out.append(rho * f / (fn + 1e-12) if fn > 0 else rho * g / (norm + 1e-12))
    return out


# ---- registry ---------------------------------------------------------------------

def test_registry_holds_the_compared_optimizers_with_their_pass_counts():
    assert COMPARED <= set(list_optimizers())
    assert set(PLAIN) == set(list_bases())  # a base optimizer is registered as itself
    for name in PLAIN:
        assert get_optimizer_info(name).passes_per_step == 1
    for name in SAM_FAMILY:
        assert get_optimizer_info(name).passes_per_step == 2


@pytest.mark.parametrize("name", SAM_FAMILY)
@pytest.mark.parametrize("base, cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                       ("adamw", torch.optim.AdamW)])
def test_factory_wraps_the_requested_base(name, base, cls):
    model, _, _ = make_problem()
    opt = create_optimizer(name, model, base=base, lr=0.01)
    assert type(opt.base_optimizer) is cls
    assert opt.param_groups is opt.base_optimizer.param_groups
    assert all(g["lr"] == 0.01 for g in opt.param_groups)


def test_default_base_is_adam_as_in_the_seed():
    model, _, _ = make_problem()
    assert type(create_optimizer("zsharp", model).base_optimizer) is torch.optim.Adam


def test_asam_groups_weights_by_name():
    model, _, _ = make_problem()
    opt = create_optimizer("asam", model)
    adaptive = {id(p) for g in opt.param_groups if g["adaptive"] for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in adaptive) == name.endswith("weight"), name


# ---- perturbations against the formulas, float64, 1e-9 relative ---------------------

@pytest.mark.parametrize("rho", [0.05, 0.7])
def test_sam_perturbation(rho):
    model, x, y = make_problem()
    opt = create_optimizer("sam", model, rho=rho)
    backward(model, x, y)
    _, _, grads = params_and_grads(model)
    assert_rel_close(perturbation(opt, model), ref_sam(grads, rho), 1e-9)


@pytest.mark.parametrize("rho, eta", [(0.5, 0.01), (0.1, 0.3)])
def test_asam_perturbation(rho, eta):
    model, x, y = make_problem()
    opt = create_optimizer("asam", model, rho=rho, eta=eta)
    backward(model, x, y)
    named, weights, grads = params_and_grads(model)
    assert_rel_close(perturbation(opt, model), ref_asam(named, weights, grads, rho, eta), 1e-9)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.95])
def test_zsharp_perturbation(alpha):
    model, x, y = make_problem()
    opt = create_optimizer("zsharp", model, rho=0.05, alpha=alpha)
    backward(model, x, y)
    _, _, grads = params_and_grads(model)
    e = perturbation(opt, model)
    assert_rel_close(e, ref_zsharp(grads, 0.05, alpha), 1e-9)
    # Every filtered tensor is rescaled to norm rho on its own.
    for g, ei in zip(grads, e):
        if g.ndim > 1:
            assert float(ei.norm()) == pytest.approx(0.05, rel=1e-9)


def test_zsharp_falls_back_to_sam_when_nothing_survives():
    model, x, y = make_problem()
    opt = create_optimizer("zsharp", model, rho=0.05)
    backward(model, x, y)
    model.fc.weight.grad.fill_(0.25)  # all |z| equal: none exceeds the quantile
    _, _, grads = params_and_grads(model)
    e = perturbation(opt, model)
    index = [n for n, _ in model.named_parameters()].index("fc.weight")
    expected = 0.05 * grads[index] / (global_norm(grads) + 1e-12)
    assert_rel_close(Perturbation([e[index]], [e.weights[index]]), [expected], 1e-9)


def zsharp_cases(seed=5):
    """Parameters covering how ZSharp lays gradients out: two filtered tensors of one size
    (rows of one B x n view), two of their own sizes, one whose filter keeps nothing (the SAM
    fallback), and two 1-d ones."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [(8, 9), (3, 100), (4, 2, 3, 3), (6, 7), (16,), (3,)]
    params = [nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64)) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64)
    params[3].grad.fill_(0.25)  # all |z| equal: nothing survives
    return params


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.95])
def test_zsharp_filters_layers_together_alike_in_both_strategies(alpha):
    results = []
    for launch_bound in [False, True]:  # True: gathers and topk, as on a GPU
        params = zsharp_cases()
        grads = [p.grad.clone() for p in params]
        weights = [p.detach().clone() for p in params]
        opt = ZSharp(params, torch.optim.SGD, rho=0.05, alpha=alpha, lr=0.1)
        opt.launch_bound = launch_bound
        opt.first_step()
        e = Perturbation([p.detach() - w for p, w in zip(params, weights)], weights)
        assert_rel_close(e, ref_zsharp(grads, 0.05, alpha), 1e-9)
        results.append(e)
    for cpu, gpu in zip(*results, strict=True):
        assert torch.equal(cpu, gpu)


def test_zsharp_on_channels_last_gradients_equals_contiguous():
    # The flat buffer holds each tensor in its memory order; the filter must not care.
    model, x, y = make_problem()
    backward(model, x, y)
    grads = [p.grad.clone() for p in model.parameters()]
    contiguous = perturbation(create_optimizer("zsharp", model, alpha=0.5), model)
    model_cl = make_problem()[0].to(memory_format=torch.channels_last)
    for p, g in zip(model_cl.parameters(), grads):
        p.grad = g.contiguous(memory_format=torch.channels_last) if g.ndim == 4 else g.clone()
    conv_grad = model_cl.conv.weight.grad
    assert not conv_grad.is_contiguous()
    channels_last = perturbation(create_optimizer("zsharp", model_cl, alpha=0.5), model_cl)
    for a, b in zip(channels_last, contiguous, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
    # Views of the buffer carry the gradients' strides, so foreach ops between them and
    # the parameters stay on their one-kernel path.
    assert FlatLayout([conv_grad], torch.float64).flat_views[0].stride() == conv_grad.stride()


def test_zsharp_reports_the_fraction_kept():
    model, x, y = make_problem()
    opt = create_optimizer("zsharp", model, alpha=0.8)
    backward(model, x, y)
    _, _, grads = params_and_grads(model)
    filtered = [g for g in grads if g.ndim > 1]
    kept = sum(int(m.sum()) for m in zsharp_masks(filtered, 0.8))
    opt.first_step()
    fraction = float(opt.last_ascent_stats["kept_fraction"])
    assert fraction == pytest.approx(kept / sum(g.numel() for g in filtered))
    # Distinct values: exactly the entries above the floor(alpha * (n - 1))-th smallest.
    assert kept == sum(g.numel() - math.floor(0.8 * (g.numel() - 1)) - 1 for g in filtered)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.95])
def test_zsharp_reports_its_ascents_cosine_with_sams(alpha):
    """cos(e, g) = <e, g> / (||e|| ||g||) from the formula's e (float64), over two steps."""
    model, x, y = make_problem()
    opt = create_optimizer("zsharp", model, base="sgd", lr=0.05, rho=0.05, alpha=alpha)
    for step in range(2):
        opt.zero_grad()
        backward(model, x + 0.1 * step, y)
        _, _, grads = params_and_grads(model)
        e = ref_zsharp(grads, 0.05, alpha)
        dot = sum(float((a * b).sum()) for a, b in zip(e, grads))
        perturbation(opt, model)
        cosine = float(opt.last_ascent_stats["ascent_cosine"])
        assert cosine == pytest.approx(dot / (global_norm(e) * global_norm(grads)), rel=1e-6)
        assert float(opt.last_ascent_stats["perturbation_norm"]) == pytest.approx(global_norm(e), rel=1e-9)
        assert 0 < cosine <= 1 + 1e-9
        opt.zero_grad()
        with frozen_bn_stats(model):
            backward(model, x, y)
        opt.second_step()


def test_zsharp_with_two_identical_groups_over_three_steps():
    # Two groups with the same shapes must not share buffers: the second group's ascent
    # would overwrite the perturbation already handed out for the first.
    gen = torch.Generator().manual_seed(11)
    groups = [[nn.Parameter(torch.randn(8, 8, generator=gen, dtype=torch.float64)),
               nn.Parameter(torch.randn(8, generator=gen, dtype=torch.float64))] for _ in range(2)]
    rhos = [0.05, 0.2]
    opt = ZSharp([{"params": g, "rho": r} for g, r in zip(groups, rhos)], torch.optim.SGD,
                 alpha=0.7, lr=0.1)
    params = [p for g in groups for p in g]
    for step in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        grads = [p.grad.clone() for p in params]
        weights = [p.detach().clone() for p in params]
        opt.first_step()
        e = Perturbation([p.detach() - w for p, w in zip(params, weights)], weights)
        # Each group: ZSharp's rule with its own rho, ||g|| over every gradient.
        norm = global_norm(grads)
        expected = []
        for (first, rho) in zip((0, 2), rhos):
            scaled = ref_zsharp(grads[first:first + 2], rho, 0.7)
            scaled[1] = rho * grads[first + 1] / (norm + 1e-12)
            expected += scaled
        assert_rel_close(e, expected, 1e-9)
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        opt.second_step()


@pytest.mark.parametrize("name", SAM_FAMILY)
def test_perturbation_norm_is_the_norm_of_the_ascent(name):
    model, x, y = make_problem()
    opt = create_optimizer(name, model, base="sgd", lr=0.05)
    for step in range(2):
        opt.zero_grad()
        backward(model, x + 0.1 * step, y)
        e = perturbation(opt, model)
        reported = float(opt.last_ascent_stats["perturbation_norm"])
        assert reported == pytest.approx(global_norm(e), rel=1e-9)
        opt.zero_grad()
        with frozen_bn_stats(model):
            backward(model, x, y)
        opt.second_step()
    if name == "sam":  # SAM's ascent has norm rho exactly
        assert reported == pytest.approx(0.05, rel=1e-9)


def test_fsam_perturbation_over_several_steps():
    rho, sigma, lmbda = 0.05, 0.8, 0.6
    model, x, y = make_problem()
    opt = create_optimizer("fsam", model, base="sgd", lr=0.05, rho=rho, sigma=sigma, lmbda=lmbda)
    momentum = None
    for step in range(4):
        xs = x + 0.1 * step  # a different gradient each step
        opt.zero_grad()
        backward(model, xs, y)
        _, _, grads = params_and_grads(model)
        if momentum is None:
            direction, momentum = grads, [g.clone() for g in grads]
        else:
            direction = [g - sigma * m for g, m in zip(grads, momentum)]
            momentum = [lmbda * m + (1 - lmbda) * g for m, g in zip(momentum, grads)]
        norm = global_norm(direction)
        expected = [rho * d / (norm + 1e-12) for d in direction]
        assert_rel_close(perturbation(opt, model), expected, 1e-9)
        opt.zero_grad()
        with frozen_bn_stats(model):
            backward(model, xs, y)
        opt.second_step()


# ---- against pytorch-optimizer 4.1.0 -------------------------------------------------

@pytest.mark.parametrize("name, reference", [("sam", "SAM"), ("fsam", "FriendlySAM")])
def test_trajectory_matches_pytorch_optimizer(name, reference):
    hp = dict(lr=0.05, momentum=0.9, weight_decay=1e-3)
    ours_model, x, y = make_problem(seed=3)
    theirs_model, _, _ = make_problem(seed=3)
    ours = create_optimizer(name, ours_model, base="sgd", rho=0.1, **hp)
    theirs = getattr(pytorch_optimizer, reference)(theirs_model.parameters(), torch.optim.SGD,
                                                   rho=0.1, **hp)
    for step in range(6):
        xs = x * (1 + 0.05 * step)
        train_step(name, ours, ours_model, xs, y)
        theirs.zero_grad()
        backward(theirs_model, xs, y)

        def closure():
            with frozen_bn_stats(theirs_model):
                return backward(theirs_model, xs, y)

        theirs.step(closure)
        theirs.zero_grad()
    # pytorch-optimizer squares and sums the gradient norms in float32 even for float64
    # parameters, so the two agree to float32 precision, not float64's.
    for (n, a), b in zip(ours_model.named_parameters(), theirs_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8, msg=n)
    torch.testing.assert_close(ours_model.bn.running_mean, theirs_model.bn.running_mean)


# ---- ZSharp's threshold against torch.quantile ---------------------------------------

@pytest.mark.filterwarnings("ignore:std\\(\\). degrees of freedom:UserWarning")
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 0.9, 0.95, 0.999])
@pytest.mark.parametrize("kind", ["normal", "ties", "constant-blocks"])
def test_zsharp_mask_equals_torch_quantile(alpha, kind):
    gen = torch.Generator().manual_seed(7)
    # Filtered together, as the optimizer does: two tensors of one size share a B x n view.
    shapes = [(3, 3), (16, 8, 3, 3), (257, 5), (2, 1000), (8, 144), (1, 1)]
    if kind == "normal":
        grads = [torch.randn(shape, generator=gen) for shape in shapes]
    elif kind == "ties":
        grads = [torch.randint(-3, 4, shape, generator=gen).float() for shape in shapes]
    else:
        grads = [torch.randint(0, 2, shape, generator=gen).float() * 0.5 for shape in shapes]
    for g, mask in zip(grads, zsharp_masks(grads, alpha), strict=True):
        z = (g - g.mean()) / (g.std() + 1e-12)  # a single entry: std NaN, nothing kept
        expected = z.abs() > torch.quantile(z.abs().flatten(), alpha)
        assert torch.equal(mask, expected), g.shape


@pytest.mark.parametrize("select", [kth_smallest_by_partition, kth_smallest_by_topk])
def test_both_selections_equal_kthvalue(select):
    gen = torch.Generator().manual_seed(3)
    for rows in [torch.randn(4, 1001, generator=gen),
                 torch.randint(0, 5, (3, 64), generator=gen).float()]:
        n = rows.shape[-1]
        for k in [1, 2, n // 2, n // 2 + 1, n - 1, n]:
            expected = torch.kthvalue(rows, k, dim=-1, keepdim=True).values
            assert torch.equal(select(rows, k), expected), (select.__name__, k)


def test_zsharp_handles_a_parameter_above_the_quantile_size_cap():
    n = 2 ** 24 + 3  # torch.quantile refuses inputs this large
    gen = torch.Generator().manual_seed(1)
    p = nn.Parameter(torch.zeros(n // 3 + 1, 3))
    p.grad = torch.randn(p.shape, generator=gen)
    opt = ZSharp([p], torch.optim.SGD, rho=0.05, alpha=0.95, lr=0.1)
    # Reference threshold by a full sort and linear interpolation, worked out here.
    g = p.grad.flatten().double()
    abs_z = ((g - g.mean()) / (g.std() + 1e-12)).abs()
    ordered = abs_z.sort().values
    pos = 0.95 * (abs_z.numel() - 1)
    lo = math.floor(pos)
    tau = ordered[lo] + (pos - lo) * (ordered[lo + 1] - ordered[lo])
    expected = (abs_z > tau).view(p.shape)
    opt.first_step()
    assert torch.equal(p.detach() != 0, expected)
    assert float(p.detach().norm()) == pytest.approx(0.05, rel=1e-5)


# ---- precision ----------------------------------------------------------------------

@pytest.mark.parametrize("name", SAM_FAMILY)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_parameters(name, dtype):
    model, x, y = make_problem(dtype=torch.float32)
    model = model.to(dtype)
    opt = create_optimizer(name, model, base="sgd", lr=0.01, rho=0.05)
    backward(model, x.to(dtype), y)
    named, weights, grads = params_and_grads(model)
    e = perturbation(opt, model)
    assert all(ei.dtype == dtype and torch.isfinite(ei).all() for ei in e)
    grads64 = [g.double() for g in grads]
    if name == "asam":
        expected = ref_asam(named, [w.double() for w in weights], grads64, 0.05, 0.01)
    elif name == "zsharp":
        expected = ref_zsharp(grads64, 0.05, 0.95)
    else:  # sam, and fsam whose first step is SAM's
        expected = ref_sam(grads64, 0.05)
    # e is measured as a difference of half-precision weights: a few ulps of |w| each.
    ulp = 2 ** -7 if dtype == torch.bfloat16 else 2 ** -10
    for ei, ref, w in zip(e, expected, weights):
        bound = 4 * ulp * (float(w.double().abs().max()) + float(ref.abs().max()))
        assert float((ei.double() - ref).abs().max()) <= bound
    opt.second_step()
    assert all(torch.isfinite(p).all() and p.dtype == dtype for p in model.parameters())


# ---- trajectories ---------------------------------------------------------------------

@pytest.mark.parametrize("name", SAM_FAMILY)
@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_rho_zero_gives_the_base_trajectory(name, base):
    hp = dict(lr=0.05, momentum=0.9) if base == "sgd" else dict(lr=0.01)
    sam_model, x, y = make_problem(seed=2)
    base_model, _, _ = make_problem(seed=2)
    sam_opt = create_optimizer(name, sam_model, base=base, rho=0.0, **hp)
    base_opt = create_optimizer(base, base_model, **hp)
    for step in range(5):
        xs = x + 0.1 * step
        train_step(name, sam_opt, sam_model, xs, y)
        train_step(base, base_opt, base_model, xs, y)
    for a, b in zip(sam_model.state_dict().values(), base_model.state_dict().values()):
        assert torch.equal(a, b)


def _roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("name", PLAIN + SAM_FAMILY)
def test_state_dict_round_trip_continues_identically(name):
    hp = dict(base="sgd", momentum=0.9) if name in SAM_FAMILY else {}
    model, x, y = make_problem(seed=4)
    opt = create_optimizer(name, model, lr=0.02, **hp)
    for step in range(3):
        train_step(name, opt, model, x + 0.1 * step, y)
    saved_model = _roundtrip(model.state_dict())
    saved_opt = _roundtrip(opt.state_dict())

    resumed, _, _ = make_problem(seed=99)
    resumed.load_state_dict(saved_model)
    resumed_opt = create_optimizer(name, resumed, lr=0.5, **hp)  # lr comes from the state
    resumed_opt.load_state_dict(saved_opt)
    if name in SAM_FAMILY:
        assert resumed_opt.param_groups is resumed_opt.base_optimizer.param_groups
    for step in range(3, 6):
        train_step(name, opt, model, x + 0.1 * step, y)
        train_step(name, resumed_opt, resumed, x + 0.1 * step, y)
    for a, b in zip(model.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", PLAIN + SAM_FAMILY)
def test_loss_decreases(name):
    model, x, y = make_problem(seed=5, dtype=torch.float32)
    lr = 0.1 if name == "sgd" else 0.01
    hp = dict(rho=0.05) if name in SAM_FAMILY else {}
    opt = create_optimizer(name, model, lr=lr, **hp)
    first = float(train_step(name, opt, model, x, y))
    for _ in range(30):
        last = float(train_step(name, opt, model, x, y))
    assert last < 0.5 * first


def test_step_with_closure_equals_the_two_explicit_steps():
    model_a, x, y = make_problem(seed=6)
    model_b, _, _ = make_problem(seed=6)
    opt_a = create_optimizer("zsharp", model_a, lr=0.01)
    opt_b = create_optimizer("zsharp", model_b, lr=0.01)
    train_step("zsharp", opt_a, model_a, x, y)
    backward(model_b, x, y)

    def closure():
        with frozen_bn_stats(model_b):
            return backward(model_b, x, y)

    opt_b.step(closure)
    for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="closure"):
        opt_b.step()


def test_second_step_restores_the_weights_bit_for_bit():
    model, x, y = make_problem(seed=8)
    opt = create_optimizer("sam", model, base="sgd", lr=0.0, rho=0.3)
    before = [p.detach().clone() for p in model.parameters()]
    backward(model, x, y)
    opt.first_step()
    assert not all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    opt.second_step()
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


# ---- BatchNorm statistics ------------------------------------------------------------

def test_frozen_bn_stats_uses_batch_statistics_and_updates_nothing():
    model, x, _ = make_problem()
    model.train()
    model(x)  # one ordinary pass so the buffers are not at their initial values
    buffers = {k: v.clone() for k, v in model.bn.state_dict().items()}
    expected = model.bn(model.conv(x)).detach()
    # The same batch statistics: output equals an ordinary training-mode pass.
    model.bn.load_state_dict(buffers)
    with frozen_bn_stats(model):
        out = model.bn(model.conv(x))
        assert model.bn.training
    torch.testing.assert_close(out, expected)
    for k, v in model.bn.state_dict().items():
        assert torch.equal(v, buffers[k]), k
    assert model.bn.track_running_stats
    model(x)
    assert int(model.bn.num_batches_tracked) == int(buffers["num_batches_tracked"]) + 1


# ---- validation ------------------------------------------------------------------------

@pytest.mark.parametrize("name, hparams, word", [
    ("sam", dict(rho=-0.1), "rho"),
    ("sam", dict(rho=float("nan")), "rho"),
    ("zsharp", dict(alpha=1.0), "alpha"),
    ("zsharp", dict(alpha=-0.01), "alpha"),
    ("asam", dict(eta=-1.0), "eta"),
    ("fsam", dict(lmbda=1.5), "lmbda"),
    ("fsam", dict(lmbda=-0.1), "lmbda"),
    ("fsam", dict(sigma=float("inf")), "sigma"),
])
def test_out_of_range_hyperparameters_raise(name, hparams, word):
    model, _, _ = make_problem()
    with pytest.raises(ConfigError, match=f"^{word} must be a finite number"):
        create_optimizer(name, model, **hparams)


@pytest.mark.parametrize("name, hparams, word", [
    ("sam", dict(alpha=0.9), "alpha"),  # zsharp's, not sam's
    ("zsharp", dict(base="adam", momentum=0.9), "momentum"),  # an SGD knob on Adam
    ("adam", dict(rho=0.05), "rho"),
    ("sgd", dict(base="adam"), "base"),
    ("zsharp", dict(base="rmsprop"), "rmsprop"),
    ("zsharp", dict(learning_rate=0.1), "learning_rate"),
])
def test_hyperparameters_the_optimizer_does_not_take_raise(name, hparams, word):
    model, _, _ = make_problem()
    with pytest.raises(ValueError, match=word):
        create_optimizer(name, model, **hparams)


def test_unknown_optimizer_name_lists_the_valid_ones():
    model, _, _ = make_problem()
    with pytest.raises(ValueError, match="lookahead.*zsharp"):
        create_optimizer("lookahead", model)


def test_sgd_base_takes_momentum_and_nesterov():
    model, _, _ = make_problem()
    opt = create_optimizer("zsharp", model, base="sgd", lr=0.1, momentum=0.9, nesterov=True)
    assert opt.param_groups[0]["nesterov"] and opt.param_groups[0]["momentum"] == 0.9


def test_asam_accepts_explicit_groups():
    model, x, y = make_problem()
    groups = ASAM.param_groups_by_name(model.named_parameters())
    opt = ASAM(groups, torch.optim.SGD, rho=0.5, eta=0.01, lr=0.1)
    backward(model, x, y)
    named, weights, grads = params_and_grads(model)
    order = [id(p) for g in groups for p in g["params"]]
    by_id = {id(p): i for i, (_, p) in enumerate(model.named_parameters())}
    expected = ref_asam(named, weights, grads, 0.5, 0.01)
    e = perturbation(opt, model)
    assert sorted(order) == sorted(by_id)
    assert_rel_close(e, expected, 1e-9)

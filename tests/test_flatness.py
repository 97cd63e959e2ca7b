"""Flatness diagnostics against exact values: on linear least squares, 0.5 mean((Xw - y)^2),
the Hessian is X'X / n whatever w, so its top eigenvalue and trace are known (numpy), and
at the least-squares solution (zero gradient) a perturbation e raises the loss by exactly
e'He / 2. On a real network: the weights, BatchNorm's buffers and the mode are left as they
were, results repeat for a seed, and a rescaling of the weights that leaves the function
as it is leaves the adaptive measures as they are (and moves the others)."""

from __future__ import annotations

from copy import deepcopy

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from analysis.flatness import flatness_warnings
from analysis.sweep import TRIAL_COLUMNS, Sweep
from trainables import flatness
from trainables.data import load_dataset
from trainables.models import create_model
from trainables.schema import EQUAL_EPOCHS, FLATNESS_METRICS


def half_mse(outputs, targets):
    return 0.5 * ((outputs.squeeze(-1) - targets) ** 2).mean()


@pytest.fixture
def least_squares():
    """A linear model at its least-squares solution, its data in two batches, and H."""
    rng = np.random.default_rng(0)
    n, d = 300, 12
    x = rng.normal(size=(n, d)) * np.linspace(0.2, 3.0, d)  # a spread of curvatures
    y = x @ rng.normal(size=d) + 0.1 * rng.normal(size=n)
    model = nn.Linear(d, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor(np.linalg.lstsq(x, y, rcond=None)[0]).view(1, d))
    xs, ys = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    batches = [(xs[:170], ys[:170]), (xs[170:], ys[170:])]  # unequal: the weighting matters
    return model, batches, x.T @ x / n


def test_the_top_eigenvalue_is_the_hessians(least_squares):
    model, batches, hessian = least_squares
    with flatness.landscape(model, batches, half_mse) as land:
        curved = flatness.curvature(land, lanczos_steps=12, probes=2)
    values, vectors = np.linalg.eigh(hessian)
    assert curved.top_eigenvalue == pytest.approx(values[-1], rel=1e-4)
    assert curved.eigenvalue_residual <= 1e-3 * values[-1]
    assert abs(curved.top_eigenvector.numpy() @ vectors[:, -1]) == pytest.approx(1, abs=1e-4)


def test_the_trace_estimate_is_unbiased_and_its_standard_error_honest(least_squares):
    """Over 100 seeds, 2 Lanczos steps and 10 probes each: the estimates' mean is within 3
    of its standard errors (their spread / 10) of tr(H), and a run's SE is what the spread
    says (their root mean square within 25% of the estimates' standard deviation)."""
    model, batches, hessian = least_squares
    with flatness.landscape(model, batches, half_mse) as land:
        runs = [flatness.curvature(land, lanczos_steps=2, probes=10, seed=seed) for seed in range(100)]
    traces, ses = np.array([r.trace for r in runs]), np.array([r.trace_se for r in runs])
    assert abs(traces.mean() - np.trace(hessian)) <= 3 * traces.std(ddof=1) / 10
    assert np.sqrt((ses ** 2).mean()) == pytest.approx(traces.std(ddof=1), rel=0.25)
    assert traces.std(ddof=1) > 1e-3 * np.trace(hessian)  # a real spread: the checks above can fail


def test_the_krylov_space_holds_the_trace_once_it_is_everything(least_squares):
    """12 Lanczos steps on 12 parameters: tr Q'HQ is the whole trace, nothing is left to
    the probes."""
    model, batches, hessian = least_squares
    with flatness.landscape(model, batches, half_mse) as land:
        curved = flatness.curvature(land, lanczos_steps=12, probes=3)
    assert curved.trace == pytest.approx(np.trace(hessian), rel=1e-6)
    assert curved.trace_se <= 1e-6 * np.trace(hessian)


def test_sharpness_at_a_minimum_is_the_quadratic_forms(least_squares):
    model, batches, hessian = least_squares
    r = 0.1
    top = np.linalg.eigvalsh(hessian)[-1]
    with flatness.landscape(model, batches, half_mse) as land:
        worst = flatness.worst_case_sharpness(land, r, steps=10)
        adaptive = flatness.worst_case_sharpness(land, r, steps=10, adaptive=True)
    # The worst increase in the ball is r^2 top / 2.
    assert worst <= r ** 2 * top / 2 * (1 + 1e-3)
    assert worst >= 0.9 * r ** 2 * top / 2
    # From the top eigenvector, where the quadratic's worst case lies, one step finds it.
    with flatness.landscape(model, batches, half_mse) as land:
        start = torch.tensor(np.linalg.eigh(hessian)[1][:, -1])
        assert flatness.worst_case_sharpness(land, r, steps=1, start=start) == pytest.approx(r ** 2 * top / 2, rel=1e-4)
    # Adaptive: the ball in |w|-scaled weights, e = |w| u with ||u|| <= r, so the worst is
    # r^2 / 2 times the top eigenvalue of diag|w| H diag|w|.
    w = np.abs(model.weight.detach().numpy().ravel())
    assert adaptive == pytest.approx(r ** 2 * np.linalg.eigvalsh(np.outer(w, w) * hessian)[-1] / 2, rel=0.1)


def adaptive_average_expected(model, hessian, r, draws):
    """At the minimum, an antithetic pair of delta = r |w| z raises the loss by exactly
    delta' H delta / 2 = r^2 z' A z / 2, A = diag|w| H diag|w|: mean r^2 tr(A) / 2 =
    r^2 sum_i H_ii w_i^2 / 2, variance r^4 tr(A^2) / 2 (z Gaussian), so the standard error
    of the mean over `draws` pairs is r^2 sqrt(tr(A^2) / (2 draws))."""
    w = np.abs(model.weight.detach().numpy().astype(np.float64).ravel())
    a = np.outer(w, w) * hessian
    return r ** 2 * (np.diag(hessian) * w ** 2).sum() / 2, r ** 2 * np.sqrt(np.trace(a @ a) / (2 * draws))


def test_adaptive_average_sharpness_at_a_minimum_is_the_closed_form_within_its_error(least_squares):
    model, batches, hessian = least_squares
    r, draws = 0.3, 200
    with flatness.landscape(model, batches, half_mse) as land:
        average, se = flatness.adaptive_average_sharpness(land, r, draws)
    expected, expected_se = adaptive_average_expected(model, hessian, r, draws)
    assert se == pytest.approx(expected_se, rel=0.3)
    assert abs(average - expected) <= 3 * expected_se
    assert expected_se < expected / 10  # the check above is a real one: 3 SE is 30% of the value


def test_a_network_is_left_as_it_was_and_results_repeat():
    data = load_dataset("digits", "data")
    torch.manual_seed(0)
    model = create_model("res20s", data.num_classes, in_channels=data.shape[0], image_size=data.shape[1])
    model.train()
    batches = flatness.subset_batches(data, size=256, batch_size=128)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first = flatness.measure(model, batches, nn.CrossEntropyLoss(), probes=3, lanczos_steps=4,
                             directions=2, ascent_steps=2)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN buffers
    assert model.training
    again = flatness.measure(model, batches, nn.CrossEntropyLoss(), probes=3, lanczos_steps=4,
                             directions=2, ascent_steps=2)
    assert again == first
    assert first.worst_sharpness >= 0 and len(first.profile) == 21
    assert first.profile[10] == (0.0, first.loss)  # t = 0: the weights
    # measure() runs them one after another on one landscape; each alone, on a fresh one,
    # gives the same: none depends on where the one before left the weights.
    for run, expected in [(lambda land: flatness.loss_profile(land), first.profile),
                          (lambda land: flatness.worst_case_sharpness(land, 0.05, 2, adaptive=True),
                           first.adaptive_worst_sharpness),
                          (lambda land: flatness.adaptive_average_sharpness(land, 0.05, 2),
                           (first.adaptive_average_sharpness, first.adaptive_average_se))]:
        with flatness.landscape(model, batches, nn.CrossEntropyLoss()) as land:
            assert run(land) == expected
    assert set(first.metrics()) == set(FLATNESS_METRICS) - {"flatness_seconds"}  # the caller times it
    trained = torch.cat([p.detach().ravel() for p in model.parameters() if p.requires_grad])
    assert first.weight_norm == pytest.approx(float(torch.linalg.vector_norm(trained.double())), rel=1e-12)


def test_the_subset_is_fixed_by_its_seed_and_capped_by_the_data():
    data = load_dataset("digits", "data")
    one, two = (flatness.subset_batches(data, size=300, batch_size=128) for _ in range(2))
    assert [len(y) for _, y in one] == [128, 128, 44]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(one, two))
    other = flatness.subset_batches(data, size=300, batch_size=128, seed=1)
    assert not torch.equal(one[0][1], other[0][1])
    everything = flatness.subset_batches(data, size=10 ** 6, batch_size=4096)
    assert sum(len(y) for _, y in everything) == len(data.train_labels)


def test_adaptive_average_sharpness_off_a_minimum_measures_curvature_not_the_gradient(least_squares):
    """Antithetic pairs: on a quadratic, L(w + delta) + L(w - delta) - 2 L(w) = delta' H delta
    exactly, so away from the minimum (a large gradient) the average still estimates
    r^2 sum_i H_ii w_i^2 / 2, as at the minimum (for the weights it is measured at)."""
    model, batches, hessian = least_squares
    with torch.no_grad():
        model.weight.add_(0.5)  # off the least-squares solution: the gradient is large
    r, draws = 0.3, 200
    with flatness.landscape(model, batches, half_mse) as land:
        assert float(torch.cat([g.ravel() for g in land.loss_and_gradient()[1]]).norm()) > 0.5
        off, se = flatness.adaptive_average_sharpness(land, r, draws)
    expected, expected_se = adaptive_average_expected(model, hessian, r, draws)
    assert abs(off - expected) <= 3 * expected_se
    assert se == pytest.approx(expected_se, rel=0.3)


@pytest.fixture(scope="module")
def digits_net():
    """A res20s briefly trained on digits (3 epochs of Adam on 1,024 images), and 64 images
    it is measured on. Tests copy it before they change it."""
    data = load_dataset("digits", "data")
    torch.manual_seed(0)
    model = create_model("res20s", data.num_classes, in_channels=data.shape[0], image_size=data.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        for x, y in flatness.subset_batches(data, size=1024, batch_size=64, seed=1):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    return model, flatness.subset_batches(data, size=64, batch_size=64)


def rescaled(model: nn.Module, factor: float = 2.0) -> nn.Module:
    """A copy computing the same function: every conv's weights x factor, and the running
    mean and variance of the BatchNorm after it (res20s: each conv has one, and no bias)
    x factor and x factor^2, as its inputs are (in eval mode; only BatchNorm's eps, 1e-5
    against the variances, tells them apart)."""
    copy = deepcopy(model)
    with torch.no_grad():
        for module in copy.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.mul_(factor)
            elif isinstance(module, nn.BatchNorm2d):
                module.running_mean.mul_(factor)
                module.running_var.mul_(factor ** 2)
    return copy


def test_adaptive_sharpness_is_invariant_to_a_rescaling_that_keeps_the_function(digits_net):
    model, batches = digits_net
    settings = dict(probes=2, lanczos_steps=10, directions=4, ascent_steps=2)
    before = flatness.measure(model, batches, nn.CrossEntropyLoss(), **settings)
    after = flatness.measure(rescaled(model), batches, nn.CrossEntropyLoss(), **settings)
    assert after.loss == pytest.approx(before.loss, rel=1e-5)  # the same function
    assert after.adaptive_worst_sharpness == pytest.approx(before.adaptive_worst_sharpness, rel=1e-3)
    assert after.adaptive_average_sharpness == pytest.approx(before.adaptive_average_sharpness, rel=1e-3)
    assert after.adaptive_average_se == pytest.approx(before.adaptive_average_se, rel=1e-3)
    assert np.array(after.profile) == pytest.approx(np.array(before.profile), rel=1e-3)  # filter-normalised
    # The measures that rescaling moves do move (so the checks above could fail): the conv
    # weights' curvature falls by factor^2, and a ball of radius r holds larger relative offsets.
    assert after.top_eigenvalue < 0.8 * before.top_eigenvalue
    assert after.worst_sharpness < 0.8 * before.worst_sharpness
    assert after.weight_norm > 1.5 * before.weight_norm


def measured_sweep(model: nn.Module, batches, seeds: range, **settings) -> Sweep:
    """A sweep of Adam confirm runs (equal epochs, rank 1), one per seed, whose curvature is
    `model`'s, measured with `settings` (flatness_probes and flatness_lanczos_steps) from
    that seed's probes."""
    rows = []
    with flatness.landscape(model, batches, nn.CrossEntropyLoss()) as land:
        for seed in seeds:
            curved = flatness.curvature(land, settings["flatness_lanczos_steps"], settings["flatness_probes"],
                                        seed=seed)
            rows.append({"run_id": f"run-{seed}", "trial_id": f"trial-{seed}", "stage": "confirm",
                         "budget_arm": EQUAL_EPOCHS, "optimizer": "adam", "confirm_rank": 1, "seed": seed,
                         "hessian_top_eig": curved.top_eigenvalue, "hessian_top_eig_residual": curved.eigenvalue_residual,
                         "hessian_trace": curved.trace, "hessian_trace_se": curved.trace_se, **settings})
    return Sweep("measured", pd.DataFrame(rows).reindex(columns=TRIAL_COLUMNS), pd.DataFrame())


def test_the_warnings_fire_on_two_probes_and_three_lanczos_steps_and_not_with_enough(digits_net):
    """Three runs: with 2 probes and 3 Lanczos steps the warnings count the runs whose
    residual exceeds 10% of the top eigenvalue and whose trace SE exceeds 30% of the trace
    (counted here from the runs' values), and there are some of each; with 20 steps and
    16 probes none."""
    seeds = range(3)
    sweep = measured_sweep(*digits_net, seeds, flatness_probes=2, flatness_lanczos_steps=3)
    runs = sweep.trials
    loose = int((runs["hessian_top_eig_residual"] > 0.1 * runs["hessian_top_eig"]).sum())
    noisy = int((runs["hessian_trace_se"] > 0.3 * runs["hessian_trace"]).sum())
    assert loose and noisy
    rough = flatness_warnings(sweep)
    assert len(rough) == 2
    assert f"Lanczos residual of the top Hessian eigenvalue exceeds 10% of it in {loose} of 3 Adam runs" in rough[0]
    assert rough[0].endswith("raise flatness_lanczos_steps (now 3)")
    assert f"SE of the Hessian trace exceeds 30% of it in {noisy} of 3 Adam runs" in rough[1]
    assert rough[1].endswith("raise flatness_probes (now 2)")
    assert flatness_warnings(measured_sweep(*digits_net, seeds, flatness_probes=16, flatness_lanczos_steps=20)) == []

"""Flatness diagnostics against exact values: on linear least squares, 0.5 mean((Xw - y)^2),
the Hessian is X'X / n whatever w, so its top eigenvalue and trace are known (numpy), and
at the least-squares solution (zero gradient) a perturbation e raises the loss by exactly
e'He / 2. On a real network: the weights, BatchNorm's buffers and the mode are left as they
were, and results repeat for a seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from trainables import flatness
from trainables.data import load_dataset
from trainables.models import create_model


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
        curved = flatness.curvature(land, lanczos_steps=12, probes=1, tol=1e-6)
    values, vectors = np.linalg.eigh(hessian)
    assert curved.top_eigenvalue == pytest.approx(values[-1], rel=1e-4)
    assert curved.eigenvalue_residual <= 1e-3 * values[-1]
    assert abs(curved.top_eigenvector.numpy() @ vectors[:, -1]) == pytest.approx(1, abs=1e-4)


def test_the_trace_estimate_is_within_three_standard_errors(least_squares):
    model, batches, hessian = least_squares
    with flatness.landscape(model, batches, half_mse) as land:
        trace, se = flatness.curvature(land, lanczos_steps=1, probes=50)[-2:]
    # Rademacher probes: the variance of v'Hv is 2 * (sum of squared off-diagonal entries).
    off = hessian - np.diag(np.diag(hessian))
    assert se == pytest.approx(np.sqrt(2 * (off ** 2).sum() / 50), rel=0.5)
    assert abs(trace - np.trace(hessian)) <= 3 * se


def test_sharpness_at_a_minimum_is_the_quadratic_forms(least_squares):
    model, batches, hessian = least_squares
    r = 0.1
    top = np.linalg.eigvalsh(hessian)[-1]
    with flatness.landscape(model, batches, half_mse) as land:
        worst = flatness.worst_case_sharpness(land, r, steps=10)
        average = flatness.average_sharpness(land, r, directions=200)
        adaptive = flatness.worst_case_sharpness(land, r, steps=10, adaptive=True)
    # The worst increase in the ball is r^2 top / 2; a random unit direction gives
    # tr(H) / d on average.
    assert worst <= r ** 2 * top / 2 * (1 + 1e-3)
    assert worst >= 0.9 * r ** 2 * top / 2
    assert average == pytest.approx(r ** 2 * np.trace(hessian) / hessian.shape[0] / 2, rel=0.15)
    assert worst >= average >= 0
    # From the top eigenvector, where the quadratic's worst case lies, one step finds it.
    with flatness.landscape(model, batches, half_mse) as land:
        start = torch.tensor(np.linalg.eigh(hessian)[1][:, -1])
        assert flatness.worst_case_sharpness(land, r, steps=1, start=start) == pytest.approx(r ** 2 * top / 2, rel=1e-4)
    # Adaptive: the ball in |w|-scaled weights, e = |w| u with ||u|| <= r, so the worst is
    # r^2 / 2 times the top eigenvalue of diag|w| H diag|w|.
    w = np.abs(model.weight.detach().numpy().ravel())
    assert adaptive == pytest.approx(r ** 2 * np.linalg.eigvalsh(np.outer(w, w) * hessian)[-1] / 2, rel=0.1)


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
                          (lambda land: flatness.average_sharpness(land, 0.05, 2), first.average_sharpness)]:
        with flatness.landscape(model, batches, nn.CrossEntropyLoss()) as land:
            assert run(land) == expected
    assert set(first.metrics()) >= {"hessian_top_eig", "hessian_trace", "sharpness_worst"}


def test_the_subset_is_fixed_by_its_seed_and_capped_by_the_data():
    data = load_dataset("digits", "data")
    one, two = (flatness.subset_batches(data, size=300, batch_size=128) for _ in range(2))
    assert [len(y) for _, y in one] == [128, 128, 44]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(one, two))
    other = flatness.subset_batches(data, size=300, batch_size=128, seed=1)
    assert not torch.equal(one[0][1], other[0][1])
    everything = flatness.subset_batches(data, size=10 ** 6, batch_size=4096)
    assert sum(len(y) for _, y in everything) == len(data.train_labels)


def test_average_sharpness_off_a_minimum_measures_curvature_not_the_gradient(least_squares):
    """Antithetic pairs: on a quadratic, L(w + rd) + L(w - rd) - 2 L(w) = r^2 d'Hd exactly,
    so away from the minimum (a large gradient) the average still estimates
    r^2 tr(H) / (2 d), as at the minimum."""
    model, batches, hessian = least_squares
    with torch.no_grad():
        model.weight.add_(0.5)  # off the least-squares solution: the gradient is large
    r = 0.1
    with flatness.landscape(model, batches, half_mse) as land:
        off = flatness.average_sharpness(land, r, directions=200)
    assert off == pytest.approx(r ** 2 * np.trace(hessian) / hessian.shape[0] / 2, rel=0.15)

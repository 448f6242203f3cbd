"""GLISTER: picks against a from-scratch Taylor-gain reference, budgets, sampling, inputs."""

import math

import numpy as np
import pytest
import torch

from adacore.selection.budgets import budget_from_fraction, per_class_budgets
from adacore.selection.per_class import class_seed
from adacore.strategies.base import get_strategy
from adacore.curvature import softmax_ce_last_layer_terms
from adacore.models import MLP
from adacore.probe import probe
from adacore.strategies.glister import GLOBAL_LABEL, Glister
from adacore.training import CoresetLoader
from adacore.validation import InputError


def problem(seed=0, n=90, m=25, p=5, classes=3):
    rng = np.random.default_rng(seed)
    grads = rng.standard_normal((n, p)).astype(np.float32)
    labels = rng.integers(0, classes, n)
    val_grads = (rng.standard_normal((m, p)) + 0.3).astype(np.float32)
    val_diag = (rng.random((m, p)) * 0.25).astype(np.float32)
    return grads, labels, val_grads, val_diag


def val_labels_for(val_grads, classes=3, seed=0):
    """Validation labels with every class present (a seeded draw)."""
    m = val_grads.shape[0]
    return np.random.default_rng(100 + seed).permutation(np.arange(m) % classes)


def brute_force(grads, val_grads, val_diag, eta, lam, k):
    """Greedy on the Taylor gain, recomputing the validation gradient from scratch."""
    grads = grads.astype(np.float64)
    v0 = val_grads.astype(np.float64).sum(axis=0)
    diag = 0.0 if val_diag is None else val_diag.astype(np.float64).sum(axis=0)
    picked, gains = [], []
    for _ in range(k):
        step = grads[picked].sum(axis=0)                 # sum of the gradients stepped on
        v = v0 - eta * diag * step                       # grad L_val at theta - eta * step
        scores = eta * grads @ v - lam * grads @ step
        scores[picked] = -np.inf
        j = int(np.argmax(scores))
        picked.append(j)
        gains.append(scores[j])
    return np.array(picked), np.array(gains)


def reference(grads, labels, val_grads, val_diag, fraction, eta, lam, per_class=True,
              mode="proportional", val_labels=None):
    """Per class: the class's own validation rows (all rows for a class that has none)."""
    if not per_class:
        k = budget_from_fraction(fraction, labels.shape[0])
        return brute_force(grads, val_grads, val_diag, eta, lam, k)
    indices, gains = [], []
    for label, k in per_class_budgets(labels, budget_from_fraction(fraction, labels.shape[0]),
                                      mode).items():
        members = np.flatnonzero(labels == label)
        own = val_labels == label
        if not own.any():
            own = np.ones_like(own)
        order, class_gains = brute_force(grads[members], val_grads[own],
                                         None if val_diag is None else val_diag[own],
                                         eta, lam, k)
        indices.append(members[order])
        gains.append(class_gains)
    return np.concatenate(indices), np.concatenate(gains)


@pytest.mark.parametrize("with_hessian", [False, True])
@pytest.mark.parametrize("lam", [0.0, 0.3])
@pytest.mark.parametrize("per_class", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_picks_and_gains_match_from_scratch_taylor_greedy(with_hessian, lam, per_class, seed):
    grads, labels, val_grads, val_diag = problem(seed)
    val_labels = val_labels_for(val_grads, seed=seed)
    diag = val_diag if with_hessian else None
    eta = 0.5
    coreset = Glister(0.2, eta=eta, lam=lam, per_class=per_class).select(
        grads, labels, val_grads=val_grads, val_hessian_diag=diag, val_labels=val_labels)
    indices, gains = reference(grads, labels, val_grads, diag, 0.2, eta, lam, per_class,
                               val_labels=val_labels)
    np.testing.assert_array_equal(coreset.indices, indices)
    np.testing.assert_allclose(coreset.gains, gains, rtol=1e-4, atol=1e-4)


def test_validation_gradient_update_changes_the_picks():
    changed = 0
    for seed in range(5):
        grads, labels, val_grads, val_diag = problem(seed)
        val_labels = val_labels_for(val_grads, seed=seed)
        first = Glister(0.2, eta=0.5).select(grads, labels, val_grads=val_grads,
                                             val_labels=val_labels)
        second = Glister(0.2, eta=0.5).select(grads, labels, val_grads=val_grads,
                                              val_hessian_diag=val_diag, val_labels=val_labels)
        changed += not np.array_equal(first.indices, second.indices)
        assert second.metadata["validation_update"] == "hessian_diag"
        assert first.metadata["validation_update"] == "first_order"
    assert changed >= 3


@pytest.mark.parametrize("per_class", [True, False])
def test_first_order_greedy_is_top_k_of_alignment(per_class):
    grads, labels, val_grads, _ = problem(3, n=200)
    val_labels = val_labels_for(val_grads, seed=3)
    coreset = Glister(0.1, eta=0.01, per_class=per_class).select(
        grads, labels, val_grads=val_grads, val_labels=val_labels)
    if per_class:
        # each class is aligned with the gradient of its own validation examples
        alignment = np.zeros(200)
        for c in range(3):
            v_c = val_grads[val_labels == c].astype(np.float64).sum(axis=0)
            alignment[labels == c] = grads[labels == c].astype(np.float64) @ v_c
        budgets = per_class_budgets(labels, budget_from_fraction(0.1, 200))
        expected = np.concatenate([
            members[np.argsort(-alignment[members], kind="stable")[:k]]
            for members, k in ((np.flatnonzero(labels == c), k) for c, k in budgets.items())])
        whole = Glister(0.1, eta=0.01, per_class=False).select(grads, labels,
                                                               val_grads=val_grads)
        assert coreset.metadata["validation_examples"] == {0: 9, 1: 8, 2: 8}
        assert coreset.metadata["classes_without_validation"] == []
        assert not np.array_equal(np.sort(coreset.indices), np.sort(whole.indices))
    else:
        alignment = grads.astype(np.float64) @ val_grads.astype(np.float64).sum(axis=0)
        expected = np.argsort(-alignment, kind="stable")[:20]
    np.testing.assert_array_equal(coreset.indices, expected)
    np.testing.assert_allclose(coreset.gains, 0.01 * alignment[expected], rtol=1e-5, atol=1e-6)


def test_first_order_picks_do_not_depend_on_eta_and_gains_scale():
    grads, labels, val_grads, _ = problem(4)
    val_labels = val_labels_for(val_grads, seed=4)
    small = Glister(0.2, eta=0.01).select(grads, labels, val_grads=val_grads,
                                          val_labels=val_labels)
    large = Glister(0.2, eta=2.0).select(grads, labels, val_grads=val_grads,
                                         val_labels=val_labels)
    np.testing.assert_array_equal(small.indices, large.indices)
    np.testing.assert_allclose(large.gains, 200 * small.gains, rtol=1e-5)


def test_ties_go_to_the_lowest_index_and_duplicates_are_penalised():
    base = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], dtype=np.float32)
    grads = np.concatenate([base, base])                 # rows 3..5 duplicate rows 0..2
    labels = np.zeros(6, dtype=int)
    val_grads = np.array([[2.0, 1.0]], dtype=np.float32)
    val_labels = np.zeros(1, dtype=int)
    plain = Glister(0.5, eta=1.0).select(grads, labels, val_grads=val_grads,
                                         val_labels=val_labels)
    np.testing.assert_array_equal(plain.indices, [0, 3, 2])   # 2 = 2 > 1.5
    curved = Glister(0.5, eta=1.0).select(grads, labels, val_grads=val_grads,
                                          val_hessian_diag=np.array([[1.5, 0.0]]),
                                          val_labels=val_labels)
    # after row 0 the first coordinate of v drops to 0.5: row 1 (gain 1) beats 3 (0.5)
    np.testing.assert_array_equal(curved.indices, [0, 1, 4])


def test_weights_are_all_one_and_budgets_exact():
    grads, labels, val_grads, val_diag = problem(5, n=301, classes=4)
    labels[:10] = 7                                      # a small class
    val_labels = val_labels_for(val_grads, classes=4, seed=5)
    for mode in ("proportional", "equal"):
        coreset = Glister(0.1, budget=mode).select(grads, labels, val_grads=val_grads,
                                                   val_hessian_diag=val_diag,
                                                   val_labels=val_labels)
        budgets = per_class_budgets(labels, budget_from_fraction(0.1, 301), mode)
        assert coreset.budgets == budgets
        assert coreset.weights.dtype == np.float64
        np.testing.assert_array_equal(coreset.weights, np.ones(len(coreset)))
        assert np.unique(coreset.indices).shape[0] == len(coreset)
        start = 0
        for label, k in budgets.items():                # class blocks, in label order
            assert np.all(labels[coreset.indices[start:start + k]] == label)
            start += k
        assert start == len(coreset)
        assert coreset.method == "glister" and coreset.round == 1
        # class 7 has no validation example: it starts from the whole validation set
        assert coreset.metadata["classes_without_validation"] == [7]
        assert coreset.metadata["validation_examples"][7] == 0


def test_global_greedy_uses_the_total_budget():
    grads, labels, val_grads, _ = problem(6, n=101)
    coreset = Glister(0.13, per_class=False).select(grads, labels, val_grads=val_grads)
    assert len(coreset) == budget_from_fraction(0.13, 101)
    classes, counts = np.unique(labels[coreset.indices], return_counts=True)
    assert coreset.budgets == dict(zip(classes.tolist(), counts.tolist()))


def stochastic_reference(grads, labels, val_grads, val_diag, fraction, eta, epsilon, seed,
                         round_index, val_labels):
    """The documented sampling protocol, then the best from-scratch gain in the sample."""
    out = []
    for label, k in per_class_budgets(labels, budget_from_fraction(fraction, labels.shape[0])
                                      ).items():
        own = val_labels == label
        v0 = val_grads[own].astype(np.float64).sum(axis=0)
        diag = val_diag[own].astype(np.float64).sum(axis=0)
        members = np.flatnonzero(labels == label)
        g = grads[members].astype(np.float64)
        rng = class_seed(seed, label, round_index)
        size = max(1, math.ceil(members.shape[0] / k * math.log(1 / epsilon)))
        open_mask = np.ones(members.shape[0], dtype=bool)
        picked = []
        for _ in range(k):
            candidates = np.flatnonzero(open_mask)
            if size < candidates.shape[0]:
                candidates = np.sort(rng.choice(candidates, size, replace=False))
            v = v0 - eta * diag * g[picked].sum(axis=0)
            j = int(candidates[np.argmax(eta * g[candidates] @ v)])
            picked.append(j)
            open_mask[j] = False
        out.append(members[picked])
    return np.concatenate(out)


def test_stochastic_greedy_is_seeded_and_best_within_its_sample():
    grads, labels, val_grads, val_diag = problem(7, n=240)
    val_labels = val_labels_for(val_grads, seed=7)
    inputs = dict(val_grads=val_grads, val_hessian_diag=val_diag, val_labels=val_labels)
    strategy = Glister(0.1, eta=0.5, greedy="stochastic", epsilon=0.1, seed=3)
    first = strategy.select(grads, labels, **inputs)
    np.testing.assert_array_equal(
        first.indices, stochastic_reference(grads, labels, val_grads, val_diag, 0.1, 0.5, 0.1,
                                            3, 1, val_labels))
    again = Glister(0.1, eta=0.5, greedy="stochastic", epsilon=0.1, seed=3).select(
        grads, labels, **inputs)
    np.testing.assert_array_equal(first.indices, again.indices)
    other_seed = Glister(0.1, eta=0.5, greedy="stochastic", epsilon=0.1, seed=4).select(
        grads, labels, **inputs)
    naive = Glister(0.1, eta=0.5).select(grads, labels, **inputs)
    assert not np.array_equal(first.indices, other_seed.indices)
    assert not np.array_equal(first.indices, naive.indices)
    # the second round draws anew, and a resumed strategy draws what an unbroken one would
    state = strategy.state_dict()
    second = strategy.select(grads, labels, **inputs)
    np.testing.assert_array_equal(
        second.indices, stochastic_reference(grads, labels, val_grads, val_diag, 0.1, 0.5, 0.1,
                                             3, 2, val_labels))
    resumed = Glister(0.1, eta=0.5, greedy="stochastic", epsilon=0.1, seed=3)
    resumed.load_state_dict(state)
    np.testing.assert_array_equal(resumed.select(grads, labels, **inputs).indices,
                                  second.indices)


def test_torch_inputs_and_registry():
    grads, labels, val_grads, val_diag = problem(8)
    val_labels = val_labels_for(val_grads, seed=8)
    from_numpy = Glister(0.2).select(grads, labels, val_grads=val_grads,
                                     val_hessian_diag=val_diag, val_labels=val_labels)
    strategy = get_strategy("glister", fraction=0.2)
    assert isinstance(strategy, Glister)
    assert strategy.requires == ("grads", "val_grads", "val_labels")
    from_torch = strategy.select(torch.from_numpy(grads), torch.from_numpy(labels),
                                 val_grads=torch.from_numpy(val_grads),
                                 val_hessian_diag=torch.from_numpy(val_diag).double(),
                                 val_labels=torch.from_numpy(val_labels))
    np.testing.assert_array_equal(from_numpy.indices, from_torch.indices)


@pytest.mark.parametrize("options, match", [
    (dict(eta=0.0), "eta"), (dict(eta=-1.0), "eta"), (dict(eta=float("nan")), "eta"),
    (dict(lam=-0.1), "lam"), (dict(greedy="lazy"), "greedy.*'naive'"),
    (dict(epsilon=0.0), "epsilon"), (dict(epsilon=1.0), "epsilon"),
    (dict(per_class="yes"), "per_class"), (dict(budget="even"), "budget"),
    (dict(update="full"), "update.*'exact', 'taylor'"),
])
def test_bad_options(options, match):
    with pytest.raises(InputError, match=match):
        Glister(0.1, **options)


def test_bad_inputs_name_the_argument_and_do_not_advance_the_round():
    grads, labels, val_grads, val_diag = problem(9)
    val_labels = val_labels_for(val_grads, seed=9)
    strategy = Glister(0.1)
    nan_val = val_grads.copy()
    nan_val[2, 1] = np.nan
    nan_diag = val_diag.copy()
    nan_diag[0, 0] = np.inf
    cases = [
        (dict(), "val_grads: GLISTER needs"),
        (dict(val_grads=None), "val_grads"),
        (dict(val_grads=nan_val), "val_grads: 1 entries are NaN"),
        (dict(val_grads=val_grads[:, :3]), "val_grads: got width 3, expected 5"),
        (dict(val_grads=val_grads[0]), "val_grads.*2-D"),
        (dict(val_grads=val_grads, val_hessian_diag=val_diag[:, :4]), "val_hessian_diag"),
        (dict(val_grads=val_grads, val_hessian_diag=nan_diag), "val_hessian_diag: 1 entries"),
        (dict(val_grads=val_grads, hessian_diag=val_diag), "unexpected inputs"),
        (dict(val_grads=val_grads), "val_labels: per-class GLISTER starts each class from "
                                    "that class's validation examples; pass one label per "
                                    r"row of val_grads \(25\), got None"),
        (dict(val_grads=val_grads, val_labels=val_labels[:-1]),
         r"val_labels: got 24 labels, expected 25 \(one per row of val_grads\)"),
        (dict(val_grads=val_grads, val_labels=val_labels + 0.5), "val_labels.*integer"),
        (dict(val_grads=val_grads, val_labels=val_labels.reshape(5, 5)), "val_labels.*1-D"),
    ]
    for inputs, match in cases:
        with pytest.raises(InputError, match=match):
            strategy.select(grads, labels, **inputs)
    with pytest.raises(InputError, match="grads"):
        strategy.select(None, labels, val_grads=val_grads, val_labels=val_labels)
    with pytest.raises(InputError, match="^labels: got 89 labels"):
        strategy.select(grads, labels[:-1], val_grads=val_grads, val_labels=val_labels)
    assert strategy.round_ == 0


def test_stochastic_ties_go_to_the_lowest_sampled_index():
    labels = np.zeros(60, dtype=int)
    grads = np.ones((60, 3), dtype=np.float32)           # every gain ties
    val_grads = np.ones((4, 3), dtype=np.float32)
    zero_diag = np.zeros_like(val_grads)
    coreset = Glister(0.1, greedy="stochastic", epsilon=0.5, seed=1).select(
        grads, labels, val_grads=val_grads, val_labels=np.zeros(4, dtype=int))
    expected = stochastic_reference(grads, labels, val_grads, zero_diag, 0.1, 0.01, 0.5, 1, 1,
                                    np.zeros(4, dtype=int))
    np.testing.assert_array_equal(coreset.indices, expected)
    assert not np.array_equal(coreset.indices, np.arange(6))   # it did sample


def test_a_class_without_validation_examples_starts_from_the_whole_validation_set():
    grads, labels, val_grads, val_diag = problem(10, n=120)
    val_labels = val_labels_for(val_grads, classes=2, seed=10)   # no validation of class 2
    inputs = dict(val_grads=val_grads, val_hessian_diag=val_diag)
    coreset = Glister(0.2, eta=0.5).select(grads, labels, val_labels=val_labels, **inputs)
    assert coreset.metadata["classes_without_validation"] == [2]
    assert coreset.metadata["validation_examples"] == {0: 13, 1: 12, 2: 0}
    for label in range(3):
        members = np.flatnonzero(labels == label)
        own = val_labels == label if label < 2 else np.ones(25, dtype=bool)
        k = coreset.budgets[label]
        alone = Glister(k / members.shape[0], eta=0.5, per_class=False).select(
            grads[members], labels[members], val_grads=val_grads[own],
            val_hessian_diag=val_diag[own])
        picked = coreset.indices[labels[coreset.indices] == label]
        np.testing.assert_array_equal(picked, members[alone.indices])


# --- the exact update against autograd on a tiny linear softmax model ---------------------

def linear_softmax_problem(seed, n=48, m=24, features=3, classes=4, scale=1.5):
    """Features, labels and a last layer z = W h + b; the vectors of the logit space."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, features, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=g)
    h_val = torch.randn(m, features, generator=g, dtype=torch.float64)
    y_val = torch.arange(m) % classes
    weight = scale * torch.randn(classes, features, generator=g, dtype=torch.float64)
    bias = 0.5 * torch.randn(classes, generator=g, dtype=torch.float64)
    return h, y, h_val, y_val, weight, bias


def bias_gradients(h, y, weight, bias):
    """Per-example gradients of the cross-entropy w.r.t. the bias, by autograd."""
    rows = []
    for i in range(h.shape[0]):
        b = bias.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy((h[i] @ weight.T + b)[None], y[i:i + 1])
        rows.append(torch.autograd.grad(loss, b)[0])
    return torch.stack(rows)


def validation_gradient(h_val, y_val, weight, bias):
    """grad_b of the summed validation cross-entropy at this bias, by autograd."""
    b = bias.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(h_val @ weight.T + b, y_val, reduction="sum")
    return torch.autograd.grad(loss, b)[0]


def exact_greedy_reference(g, h_val, y_val, weight, bias, k, eta, lam, sampler=None):
    """GLISTER with the step actually taken: after the picks S the bias is
    b - eta sum_S g_j and the validation gradient is recomputed there by autograd."""
    picked, gains = [], []
    for _ in range(k):
        step = g[picked].sum(dim=0)
        v = validation_gradient(h_val, y_val, weight, bias - eta * step)
        scores = (eta * g @ v - lam * g @ step).numpy()
        scores[picked] = -np.inf
        candidates = np.flatnonzero(np.isfinite(scores)) if sampler is None else sampler(picked)
        j = int(candidates[np.argmax(scores[candidates])])
        picked.append(j)
        gains.append(scores[j])
    return np.array(picked), np.array(gains)


def stochastic_sampler(n, k, epsilon, rng):
    size = max(1, math.ceil(n / k * math.log(1 / epsilon)))

    def sample(picked):
        candidates = np.setdiff1d(np.arange(n), picked)
        if size < candidates.shape[0]:
            candidates = np.sort(rng.choice(candidates, size, replace=False))
        return candidates
    return sample


@pytest.mark.parametrize("per_class", [False, True])
@pytest.mark.parametrize("lam", [0.0, 0.2])
@pytest.mark.parametrize("seed", [0, 1])
def test_exact_update_is_the_autograd_step_on_the_bias(per_class, lam, seed):
    h, y, h_val, y_val, weight, bias = linear_softmax_problem(seed)
    g = bias_gradients(h, y, weight, bias)
    val_g = bias_gradients(h_val, y_val, weight, bias)
    eta, fraction = 0.8, 1 / 6
    coreset = Glister(fraction, eta=eta, lam=lam, per_class=per_class, update="exact").select(
        g.numpy(), y.numpy(), val_grads=val_g.numpy(), val_labels=y_val.numpy())
    assert coreset.metadata["validation_update"] == "exact_softmax"
    if per_class:
        indices, gains = [], []
        for label, k in per_class_budgets(y.numpy(), 8).items():
            members = np.flatnonzero(y.numpy() == label)
            own = y_val == label
            order, class_gains = exact_greedy_reference(g[members], h_val[own], y_val[own],
                                                        weight, bias, k, eta, lam)
            indices.append(members[order])
            gains.append(class_gains)
        indices, gains = np.concatenate(indices), np.concatenate(gains)
    else:
        indices, gains = exact_greedy_reference(g, h_val, y_val, weight, bias, 8, eta, lam)
    np.testing.assert_array_equal(coreset.indices, indices)
    np.testing.assert_allclose(coreset.gains, gains, rtol=1e-4, atol=1e-5)


def test_exact_update_changes_the_picks_so_the_comparison_can_fail():
    changed = 0
    for seed in range(4):
        h, y, h_val, y_val, weight, bias = linear_softmax_problem(seed)
        g = bias_gradients(h, y, weight, bias).numpy()
        val_g = bias_gradients(h_val, y_val, weight, bias).numpy()
        inputs = dict(val_grads=val_g, val_labels=y_val.numpy())
        exact = Glister(1 / 6, eta=0.8, per_class=False, update="exact").select(g, y, **inputs)
        first = Glister(1 / 6, eta=0.8, per_class=False).select(g, y, **inputs)
        changed += not np.array_equal(exact.indices, first.indices)
    assert changed >= 2


def test_the_authors_configuration_global_stochastic_exact_in_logit_space():
    h, y, h_val, y_val, weight, bias = linear_softmax_problem(3, n=120)
    g = bias_gradients(h, y, weight, bias)
    val_g = bias_gradients(h_val, y_val, weight, bias)
    strategy = Glister(0.1, eta=0.8, per_class=False, greedy="stochastic", update="exact",
                       seed=5)
    assert strategy.requires == ("grads", "val_grads", "val_labels")
    assert strategy.preferred_space == "logits"
    coreset = strategy.select(g.numpy(), y.numpy(), val_grads=val_g.numpy(),
                              val_labels=y_val.numpy())
    sampler = stochastic_sampler(120, 12, 0.01, class_seed(5, GLOBAL_LABEL, 1))
    indices, gains = exact_greedy_reference(g, h_val, y_val, weight, bias, 12, 0.8, 0.0,
                                            sampler=sampler)
    np.testing.assert_array_equal(coreset.indices, indices)
    np.testing.assert_allclose(coreset.gains, gains, rtol=1e-4, atol=1e-5)


def hessian_diagonals(h_val, y_val, weight, bias):
    """Per-example diagonals of the bias Hessian of the cross-entropy, by autograd."""
    rows = []
    for i in range(h_val.shape[0]):
        def loss(b, i=i):
            return torch.nn.functional.cross_entropy((h_val[i] @ weight.T + b)[None],
                                                     y_val[i:i + 1])
        rows.append(torch.diagonal(torch.autograd.functional.hessian(loss, bias)))
    return torch.stack(rows)


def test_taylor_update_agrees_with_the_exact_step_to_first_order_only():
    """At small eta the Taylor (diagonal) and the exact update pick alike; what separates
    them at second order is exactly the off-diagonal curvature the diagonal drops."""
    h, y, h_val, y_val, weight, bias = linear_softmax_problem(4)
    g = bias_gradients(h, y, weight, bias)
    val_g = bias_gradients(h_val, y_val, weight, bias)
    diag = hessian_diagonals(h_val, y_val, weight, bias)
    full = torch.autograd.functional.hessian(
        lambda b: torch.nn.functional.cross_entropy(h_val @ weight.T + b, y_val,
                                                    reduction="sum"), bias)
    eta = 1e-3
    taylor = Glister(1 / 6, eta=eta, per_class=False).select(
        g.numpy(), y.numpy(), val_grads=val_g.numpy(), val_hessian_diag=diag.numpy())
    indices, exact_gains = exact_greedy_reference(g, h_val, y_val, weight, bias, 8, eta, 0.0)
    np.testing.assert_array_equal(taylor.indices, indices)
    np.testing.assert_allclose(taylor.gains, exact_gains, rtol=1e-3)
    # second order: reported - exact = eta^2 <(H - diag H) s, g_j>, s the earlier picks
    picked = torch.from_numpy(taylor.indices)
    steps = torch.stack([g[picked[:t]].sum(dim=0) for t in range(8)])
    off_diagonal = full - torch.diag(torch.diagonal(full))
    predicted = eta ** 2 * ((steps @ off_diagonal.T) * g[picked]).sum(dim=1)
    assert torch.abs(predicted[1:]).min() > 1e-7             # the difference is real
    np.testing.assert_allclose(taylor.gains - exact_gains, predicted.numpy(), rtol=0.05,
                               atol=2e-8)
    # with a training-sized step the two updates part ways
    differ = 0
    for seed in range(4):
        h, y, h_val, y_val, weight, bias = linear_softmax_problem(seed)
        g = bias_gradients(h, y, weight, bias)
        val_g = bias_gradients(h_val, y_val, weight, bias)
        diag = hessian_diagonals(h_val, y_val, weight, bias)
        inputs = dict(val_grads=val_g.numpy(), val_labels=y_val.numpy())
        exact = Glister(1 / 6, eta=0.8, per_class=False, update="exact").select(
            g.numpy(), y.numpy(), **inputs)
        approximate = Glister(1 / 6, eta=0.8, per_class=False).select(
            g.numpy(), y.numpy(), val_hessian_diag=diag.numpy(), **inputs)
        differ += not np.array_equal(exact.indices, approximate.indices)
    assert differ >= 1


def test_exact_update_refuses_vectors_that_are_not_logit_gradients():
    h, y, h_val, y_val, weight, bias = linear_softmax_problem(5)
    logits, val_logits = h @ weight.T + bias, h_val @ weight.T + bias
    g = bias_gradients(h, y, weight, bias).numpy()
    val_g = bias_gradients(h_val, y_val, weight, bias).numpy()
    wide, _ = softmax_ce_last_layer_terms(logits, y, h)
    val_wide, _ = softmax_ce_last_layer_terms(val_logits, y_val, h_val)
    strategy = Glister(0.1, update="exact", per_class=False)
    with pytest.raises(InputError, match="^grads: .* rows are not softmax cross-entropy logit "
                                         "gradients p - y.*space 'logits'"):
        strategy.select(wide.numpy(), y, val_grads=val_wide.numpy(), val_labels=y_val)
    with pytest.raises(InputError, match="val_grads: 24 rows are not"):
        strategy.select(g, y, val_grads=val_g + 0.1, val_labels=y_val)
    with pytest.raises(InputError, match=r"val_labels: got labels in \[0, 4\], expected "
                                         r"class indices in \[0, 3\]"):
        strategy.select(g, y, val_grads=val_g, val_labels=np.arange(24) % 5)
    with pytest.raises(InputError, match="val_labels: update='exact' recovers the validation "
                                         "logits"):
        strategy.select(g, y, val_grads=val_g)
    assert strategy.round_ == 0
    # the global Taylor form needs no labels, and ignores what it is given
    plain = Glister(0.1, per_class=False)
    assert plain.requires == ("grads", "val_grads") and plain.preferred_space == "last_layer"
    np.testing.assert_array_equal(
        plain.select(g, y, val_grads=val_g).indices,
        plain.select(g, y, val_grads=val_g, val_labels=y_val).indices)


# --- through the training loader ----------------------------------------------------------

def test_loader_picks_the_space_and_passes_the_validation_labels():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(90, 5, generator=g), torch.arange(90) % 3
    vx, vy = torch.randn(30, 5, generator=g), torch.arange(30) % 3
    model = MLP(in_features=5, hidden=(4,), num_classes=3)
    authors = Glister(0.1, per_class=False, greedy="stochastic", update="exact")
    assert CoresetLoader(x, y, authors, val_x=vx, val_y=vy).space == "logits"
    for strategy, space in ((Glister(0.1, eta=0.5), "last_layer"),
                            (Glister(0.1, eta=0.5, update="exact"), "logits")):
        loader = CoresetLoader(x, y, strategy, val_x=vx, val_y=vy)
        assert loader.space == space
        coreset = loader.select(model)
        train = probe(model, x, y, space=space, hessian=None)
        val = probe(model, vx, vy, space=space)
        twin = Glister(0.1, eta=0.5, update=strategy.update).select(
            train.grads, y.numpy(), val_grads=val.grads, val_hessian_diag=val.hessian_diag,
            val_labels=vy.numpy())
        np.testing.assert_array_equal(coreset.indices, twin.indices)
        assert coreset.metadata["validation_examples"] == {0: 10, 1: 10, 2: 10}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("update", ["taylor", "exact"])
def test_cuda_selects_what_the_cpu_selects(update):
    h, y, h_val, y_val, weight, bias = linear_softmax_problem(6, n=120)
    g = bias_gradients(h, y, weight, bias).numpy()
    val_g = bias_gradients(h_val, y_val, weight, bias).numpy()
    diag = hessian_diagonals(h_val, y_val, weight, bias).numpy()
    inputs = dict(val_grads=val_g, val_hessian_diag=diag, val_labels=y_val.numpy())
    on_cpu = Glister(0.1, eta=0.8, update=update).select(g, y.numpy(), **inputs)
    on_gpu = Glister(0.1, eta=0.8, update=update, device="cuda").select(g, y.numpy(), **inputs)
    np.testing.assert_array_equal(on_cpu.indices, on_gpu.indices)
    np.testing.assert_allclose(on_cpu.gains, on_gpu.gains, rtol=1e-4, atol=1e-6)

"""The probe against per-example autograd, exact Hessians, and its own invariances."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from adacore import InputError
from adacore.models import MLP, LastLayerModel, LastLayerWrapper, LeNet5, cifar_resnet
from adacore.probe import ProbeResult, probe, project, projection_matrix

SPACES = ["logits", "last_layer", "last_layer_output_preconditioned"]

N, IN, HIDDEN, C = 11, 5, 7, 3


def small_model(seed=0, bias=True):
    torch.manual_seed(seed)
    model = MLP(in_features=IN, hidden=(HIDDEN,), num_classes=C).double()
    if not bias:
        model.classifier = nn.Linear(HIDDEN, C, bias=False).double()
    return model


def small_data(seed=0, n=N):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, IN, generator=generator, dtype=torch.float64)
    y = torch.randint(0, C, (n,), generator=generator)
    return x, y


def last_layer_loss(model, x_i, y_i):
    """The loss of one example as a function of the flat last-layer parameters."""
    layer = model.classifier
    sizes = [layer.weight.numel()] + ([layer.bias.numel()] if layer.bias is not None else [])

    def loss(theta):
        pieces = torch.split(theta, sizes)
        params = {"classifier.weight": pieces[0].reshape(layer.weight.shape)}
        if layer.bias is not None:
            params["classifier.bias"] = pieces[1]
        logits = functional_call(model, params, (x_i[None],))
        return F.cross_entropy(logits, y_i[None])

    theta = torch.cat([p.detach().reshape(-1) for p in layer.parameters()])
    return loss, theta


def test_logit_space_equals_autograd():
    model, (x, y) = small_model(), small_data()
    result = probe(model, x, y, space="logits")
    assert isinstance(result, ProbeResult) and result.space == "logits"
    assert result.grads.dtype == torch.float32 and result.grads.shape == (N, C)
    assert result.labels.dtype == torch.int64
    torch.testing.assert_close(result.labels, y)
    model.eval()
    for i in range(N):
        logits_i = model(x[i:i + 1])[0].detach()
        loss = lambda z: F.cross_entropy(z[None], y[i:i + 1])
        gradient = torch.autograd.functional.jacobian(loss, logits_i)
        hessian = torch.autograd.functional.hessian(loss, logits_i)
        torch.testing.assert_close(result.grads[i], gradient.float())
        torch.testing.assert_close(result.hessian_diag[i], torch.diagonal(hessian).float())


@pytest.mark.parametrize("bias", [True, False])
def test_last_layer_space_equals_autograd(bias):
    model, (x, y) = small_model(1, bias=bias), small_data(1)
    result = probe(model, x, y, space="last_layer")
    p = C * HIDDEN + (C if bias else 0)
    assert result.grads.shape == (N, p) and result.hessian_diag.shape == (N, p)
    model.eval()
    for i in range(N):
        # gradient by backpropagation through the real model
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        expected = [model.classifier.weight.grad.reshape(-1)]
        if bias:
            expected.append(model.classifier.bias.grad)
        torch.testing.assert_close(result.grads[i], torch.cat(expected).float())
        loss, theta = last_layer_loss(model, x[i], y[i])
        hessian = torch.autograd.functional.hessian(loss, theta)
        torch.testing.assert_close(result.hessian_diag[i], torch.diagonal(hessian).float())


def test_hessian_none_skips_the_diagonal_and_keeps_grads():
    model, (x, y) = small_model(), small_data()
    for space in ("logits", "last_layer"):
        full = probe(model, x, y, space=space)
        bare = probe(model, x, y, space=space, hessian=None)
        assert bare.hessian_diag is None
        torch.testing.assert_close(bare.grads, full.grads)


@pytest.mark.parametrize("space", ["logits", "last_layer"])
def test_hutchinson_converges_to_the_closed_form(space):
    model, (x, y) = small_model(2), small_data(2)
    exact = probe(model, x, y, space=space).hessian_diag
    errors = []
    for n_samples in (4, 64, 1024):
        estimate = probe(model, x, y, space=space, hessian="hutchinson", n_samples=n_samples,
                         generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(estimate.grads, probe(model, x, y, space=space).grads)
        errors.append(float((estimate.hessian_diag - exact).abs().mean()))
    # the error of a mean of m probes shrinks like 1 / sqrt(m): 16x more probes, ~4x less
    assert errors[1] < errors[0] / 2 and errors[2] < errors[1] / 2
    assert errors[2] < 0.1 * float(exact.abs().mean())
    # not exact with few probes (z_c z_c' off-diagonal terms), so the test can tell
    assert errors[0] > 1e-3 * float(exact.abs().mean())


def test_hutchinson_is_reproducible_with_a_generator():
    model, (x, y) = small_model(), small_data()
    runs = [probe(model, x, y, space="last_layer", hessian="hutchinson", n_samples=3,
                  generator=torch.Generator().manual_seed(5)).hessian_diag for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


def test_hutchinson_with_a_custom_loss_matches_exact_hessians():
    model, (x, y) = small_model(3), small_data(3)

    def softmax_squared_error(logits, labels):
        residual = torch.softmax(logits, dim=1) - F.one_hot(labels, logits.shape[1])
        return 0.5 * (residual ** 2).sum(dim=1)

    result = probe(model, x, y, space="logits", hessian="hutchinson", n_samples=4000,
                   generator=torch.Generator().manual_seed(1), loss_fn=softmax_squared_error)
    model.eval()
    scale = 0.0
    for i in range(N):
        logits_i = model(x[i:i + 1])[0].detach()
        loss = lambda z: softmax_squared_error(z[None], y[i:i + 1])[0]
        gradient = torch.autograd.functional.jacobian(loss, logits_i)
        hessian = torch.autograd.functional.hessian(loss, logits_i)
        torch.testing.assert_close(result.grads[i], gradient.float())
        diagonal = torch.diagonal(hessian).float()
        torch.testing.assert_close(result.hessian_diag[i], diagonal, atol=0.02, rtol=0.0)
        scale = max(scale, float(diagonal.abs().max()))
    assert scale > 0.05   # the tolerance above is small against the entries


def test_hutchinson_is_exact_for_a_separable_loss():
    # a loss whose Hessian in the logits is diagonal: z * (H z) = H_cc since z_c^2 = 1
    model, (x, y) = small_model(), small_data()

    def quartic(logits, labels):
        return (logits ** 4).sum(dim=1) / 12.0 - logits.gather(1, labels[:, None])[:, 0]

    result = probe(model, x, y, hessian="hutchinson", n_samples=1, loss_fn=quartic,
                   generator=torch.Generator().manual_seed(0))
    model.eval()
    logits = model(x).detach()
    torch.testing.assert_close(result.hessian_diag, (logits ** 2).float())
    expected_grads = logits ** 3 / 3.0 - F.one_hot(y, C)
    torch.testing.assert_close(result.grads, expected_grads.float())


@pytest.mark.parametrize("space", ["logits", "last_layer", "last_layer_output_preconditioned"])
def test_results_do_not_depend_on_batch_size(space):
    model, (x, y) = small_model(), small_data()
    results = [probe(model, x, y, space=space, batch_size=b) for b in (1, 3, N, 1000)]
    for other in results[1:]:
        torch.testing.assert_close(other.grads, results[0].grads)
        if results[0].hessian_diag is not None:
            torch.testing.assert_close(other.hessian_diag, results[0].hessian_diag)


def test_output_preconditioned_vectors_equal_the_formula():
    model, (x, y) = small_model(4), small_data(4)
    eps = 1e-3
    result = probe(model, x, y, space="last_layer_output_preconditioned", eps=eps)
    assert result.hessian_diag is None
    model.eval()
    h = model.features(x).detach()
    p = torch.softmax(model.classifier(h), dim=1).detach()
    factor = (p - F.one_hot(y, C)) / (p * (1 - p) + eps)
    h1 = torch.cat([h, torch.ones(N, 1, dtype=h.dtype)], dim=1)
    outer = factor[:, :, None] * h1[:, None, :]              # (n, C, D + 1)
    # layout as in the last-layer space: weights row-major, then the bias column
    expected = torch.cat([outer[:, :, :-1].reshape(N, -1), outer[:, :, -1]], dim=1)
    torch.testing.assert_close(result.grads, expected.float())


def test_eval_mode_is_used_and_modes_are_restored():
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(IN, HIDDEN), nn.BatchNorm1d(HIDDEN), nn.ReLU(),
                         nn.Dropout(0.5))
    model = LastLayerWrapper(body, nn.Linear(HIDDEN, C)).double()
    x, y = small_data()
    model.train()
    body[3].eval()        # a mixed state must come back as it was, module by module
    running_mean = body[1].running_mean.clone()
    first = probe(model, x, y, space="last_layer")
    second = probe(model, x, y, space="last_layer", batch_size=2)
    torch.testing.assert_close(first.grads, second.grads)
    torch.testing.assert_close(first.hessian_diag, second.hessian_diag)
    assert model.training and body[1].training and not body[3].training
    assert torch.equal(body[1].running_mean, running_mean)   # no batch-norm update
    model.eval()
    expected = probe(model, x, y, space="last_layer")
    assert not model.training
    torch.testing.assert_close(first.grads, expected.grads)


def pairwise_squared_distances(points):
    return torch.cdist(points.double(), points.double()) ** 2


@pytest.mark.parametrize("kind", ["gaussian", "achlioptas"])
def test_projection_preserves_distances(kind):
    generator = torch.Generator().manual_seed(0)
    points = torch.randn(50, 2000, generator=generator)
    projected = project(points, 256, seed=3, kind=kind)
    assert projected.shape == (50, 256) and projected.dtype == torch.float32
    before = pairwise_squared_distances(points)
    after = pairwise_squared_distances(projected)
    off_diagonal = ~torch.eye(50, dtype=torch.bool)
    ratio = (after / before)[off_diagonal]
    relative = (ratio - 1.0).abs()
    # the relative error of one squared distance has standard deviation sqrt(2 / 256)
    # = 0.088; the JL lemma bounds all 1,225 pairs at once by about 0.4 for k = 256
    assert float(relative.mean()) < 0.1
    assert float(torch.quantile(relative, 0.95)) < 0.2
    assert float(relative.max()) < 0.45
    assert abs(float(ratio.mean()) - 1.0) < 0.04      # unbiased: scaled by 1 / sqrt(k)


def test_projection_is_fixed_by_its_seed():
    vectors = torch.randn(20, 30, generator=torch.Generator().manual_seed(1))
    first = project(vectors, 8, seed=7)
    assert torch.equal(first, project(vectors, 8, seed=7, batch_size=3))
    assert not torch.allclose(first, project(vectors, 8, seed=8))
    assert torch.equal(projection_matrix(30, 8, 7), projection_matrix(30, 8, 7))
    assert torch.equal(projection_matrix(30, 8, 7, dtype=torch.float64).float(),
                       projection_matrix(30, 8, 7))
    sparse = projection_matrix(300, 40, 0, kind="achlioptas")
    assert 0.6 < float((sparse == 0).float().mean()) < 0.73   # two thirds zeros


@pytest.mark.parametrize("space,hessian", [("last_layer", None), ("logits", None),
                                           ("last_layer_output_preconditioned", "closed_form")])
def test_probe_projection_equals_projecting_afterwards(space, hessian):
    model, (x, y) = small_model(), small_data()
    plain = probe(model, x, y, space=space, hessian=hessian)
    projected = probe(model, x, y, space=space, hessian=hessian, projection_dim=6,
                      projection_seed=2, batch_size=4)
    assert projected.grads.shape == (N, 6)
    torch.testing.assert_close(projected.grads, project(plain.grads.double(), 6, seed=2),
                               rtol=1e-4, atol=1e-5)


def test_probe_accepts_numpy_and_stores_outputs_where_asked():
    model, (x, y) = small_model(), small_data()
    from_numpy = probe(model, x.numpy(), y.numpy(), device="cpu")
    torch.testing.assert_close(from_numpy.grads, probe(model, x, y).grads)
    assert from_numpy.grads.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_model_on_cuda_with_inputs_on_cpu():
    model, (x, y) = small_model(), small_data()
    expected = probe(model, x, y, space="last_layer")
    result = probe(model.cuda(), x, y, space="last_layer", batch_size=4)
    assert result.grads.device.type == "cuda" and result.labels.device.type == "cuda"
    torch.testing.assert_close(result.grads.cpu(), expected.grads)
    torch.testing.assert_close(result.hessian_diag.cpu(), expected.hessian_diag)
    hutchinson = probe(model, x, y, space="last_layer", hessian="hutchinson",
                       generator=torch.Generator(device="cuda").manual_seed(0))
    assert hutchinson.hessian_diag.device.type == "cuda"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_convolutional_model_on_cuda_runs_eagerly(monkeypatch):
    monkeypatch.setattr("adacore.probe._TRACED_MIN_EXAMPLES", 1)
    model, x, y = lenet_case(40)
    expected = probe(model, x, y, space="last_layer", forward="eager")
    result = probe(model.cuda(), x, y, space="last_layer")
    assert result.forward == "eager" and result.grads.device.type == "cuda"
    torch.testing.assert_close(result.grads.cpu(), expected.grads)
    with pytest.raises(InputError, match="forward"):
        probe(model, x, y, forward="traced")


def bad_calls():
    model, (x, y) = small_model(), small_data()
    return model, x, y, [
        ("y", dict(y=y[:-1])),
        ("y", dict(y=torch.full((N,), C))),
        ("y", dict(y=-torch.ones(N, dtype=torch.long))),
        ("y", dict(y=np.full(N, 0.5))),
        ("space", dict(space="weights")),
        ("hessian", dict(hessian="exact")),
        ("batch_size", dict(batch_size=0)),
        ("n_samples", dict(hessian="hutchinson", n_samples=0)),
        ("eps", dict(eps=-1.0)),
        ("projection_dim", dict(projection_dim=0, hessian=None)),
        ("projection_dim", dict(space="last_layer", projection_dim=8)),
        ("projection_dim", dict(space="logits", projection_dim=2)),
        ("projection_kind", dict(projection_kind="fourier", hessian=None)),
        ("hessian", dict(loss_fn=lambda z, t: F.cross_entropy(z, t, reduction="none"))),
        ("hessian", dict(space="last_layer_output_preconditioned", hessian=None)),
        ("loss_fn", dict(hessian="hutchinson", loss_fn=F.cross_entropy)),   # a scalar
        ("loss_fn", dict(loss_fn="cross_entropy", hessian=None)),
        ("generator", dict(hessian="hutchinson", generator=0)),
        ("forward", dict(forward="jit")),
    ]


def test_bad_inputs_raise_input_errors_naming_the_argument():
    model, x, y, calls = bad_calls()
    for name, changes in calls:
        arguments = dict(y=y) | changes
        labels = arguments.pop("y")
        with pytest.raises(InputError, match=name):
            probe(model, x, labels, **arguments)


def test_a_model_without_the_interface_is_refused():
    x, y = small_data()
    plain = nn.Sequential(nn.Linear(IN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, C))
    with pytest.raises(InputError, match="model"):
        probe(plain, x, y)
    with pytest.raises(InputError, match="model"):
        probe("not a model", x, y)


def test_project_refuses_bad_arguments():
    with pytest.raises(InputError, match="dim"):
        project(torch.ones(3, 4), 0)
    with pytest.raises(InputError, match="vectors"):
        project(torch.ones(4), 2)
    with pytest.raises(InputError, match="kind"):
        project(torch.ones(3, 4), 2, kind="dense")
    with pytest.raises(InputError, match="batch_size"):
        project(torch.ones(3, 4), 2, batch_size=0)


# The traced forward (``forward="traced"`` / ``"auto"``) against the eager one.

def lenet_case(n=300, seed=0):
    """LeNet-5 on random 28x28 images; n = 300 leaves a partial piece of 44 rows."""
    torch.manual_seed(seed)
    model = LeNet5(1, 10, 28)
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=generator)
    return model, x, torch.randint(0, 10, (n,), generator=generator)


def resnet_case(n=100, seed=0):
    """ResNet8 with batch-norm statistics that are not the identity (so folding shows)."""
    torch.manual_seed(seed)
    model = cifar_resnet(8, 5, 1)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 12, 12, generator=generator)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.2, 0.2, generator=generator)
    return model, x, torch.randint(0, 5, (n,), generator=generator)


def mlp_case(n=100, seed=0):
    torch.manual_seed(seed)
    model = MLP(in_features=20, hidden=(16, 8), num_classes=4)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 20, generator=generator)
    return model, x, torch.randint(0, 4, (n,), generator=generator)


CASES = {"lenet": lenet_case, "resnet8": resnet_case, "mlp": mlp_case}


def assert_same_probe(result, expected):
    torch.testing.assert_close(result.grads, expected.grads, rtol=1e-5, atol=1e-6)
    if expected.hessian_diag is None:
        assert result.hessian_diag is None
    else:
        torch.testing.assert_close(result.hessian_diag, expected.hessian_diag, rtol=1e-5,
                                   atol=1e-6)


@pytest.mark.parametrize("space", SPACES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_traced_forward_equals_eager(case, space):
    model, x, y = CASES[case]()
    eager = probe(model, x, y, space=space, forward="eager")
    traced = probe(model, x, y, space=space, forward="traced")
    assert eager.forward == "eager" and traced.forward == "traced"
    assert_same_probe(traced, eager)
    if space == "logits":       # and the traced path against the model's own forward
        model.eval()
        with torch.no_grad():
            logits = model(x)
        expected = torch.softmax(logits, dim=1) - F.one_hot(y, logits.shape[1])
        torch.testing.assert_close(traced.grads, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["lenet", "resnet8"])
def test_traced_results_do_not_depend_on_batch_size(case):
    model, x, y = CASES[case]()
    results = [probe(model, x, y, space="last_layer", forward="traced", batch_size=b)
               for b in (1, 7, 256, 1000)]
    for other in results[1:]:
        assert_same_probe(other, results[0])


def test_auto_traces_float32_convolutional_models_on_enough_examples(monkeypatch):
    model, x, y = lenet_case(40)
    assert probe(model, x, y).forward == "eager"                # too few to pay
    monkeypatch.setattr("adacore.probe._TRACED_MIN_EXAMPLES", 40)
    assert probe(model, x, y).forward == "traced"
    assert probe(model, x, y, forward="eager").forward == "eager"
    assert probe(*mlp_case(40)).forward == "eager"               # no convolutions
    assert probe(model.double(), x.double(), y).forward == "eager"


def state_of(model):
    return ({name: tensor.clone() for name, tensor in model.state_dict().items()},
            [(name, module.training) for name, module in model.named_modules()],
            [(name, p.requires_grad, p.grad) for name, p in model.named_parameters()])


@pytest.mark.parametrize("case", ["lenet", "resnet8"])
def test_the_traced_forward_leaves_the_model_as_it_was(case):
    model, x, y = CASES[case]()
    model.train()
    (model.stages[0] if case == "resnet8" else model.fc).eval()     # a mixed state
    before_state, before_modes, before_params = state_of(model)
    result = probe(model, x, y, space="last_layer", forward="traced")
    assert result.forward == "traced"
    after_state, after_modes, after_params = state_of(model)
    assert after_modes == before_modes and after_params == before_params
    assert after_state.keys() == before_state.keys()
    for name, tensor in before_state.items():
        assert torch.equal(after_state[name], tensor), name
    # the trace holds a copy of the weights: a changed model gets a new one
    with torch.no_grad():
        model.classifier.weight.mul_(2.0)
        next(model.parameters()).mul_(0.5)
    assert_same_probe(probe(model, x, y, forward="traced"), probe(model, x, y, forward="eager"))


def test_the_trace_is_reused_while_the_weights_change_in_place_and_retraced_after():
    import gc
    import weakref

    from adacore import probe as probe_module

    model, x, y = lenet_case()
    probe(model, x, y, forward="traced")
    trace = probe_module._TRACES[model][1]
    # an optimizer step changes the weights in place: the same trace, today's weights
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
    assert_same_probe(probe(model, x, y, forward="traced"), probe(model, x, y, forward="eager"))
    assert probe_module._TRACES[model][1] is trace
    # a replaced layer (new parameters) is traced again, and used
    model.fc[2] = nn.Linear(120, 84)
    assert_same_probe(probe(model, x, y, forward="traced"), probe(model, x, y, forward="eager"))
    assert probe_module._TRACES[model][1] is not trace
    trace = probe_module._TRACES[model][1]
    # flat rows instead of images (another shape past the batch axis): traced again
    flat = x.reshape(x.shape[0], -1)
    assert_same_probe(probe(model, flat, y, forward="traced"),
                      probe(model, x, y, forward="eager"))
    assert probe_module._TRACES[model][1] is not trace
    # the cache keeps no model alive
    alive = weakref.ref(model)
    del model, optimizer
    gc.collect()
    assert alive() is None


class ReadsItsBuffer(LastLayerModel):
    """Traces a buffer's value as a Python number (a constant of the trace), and has a
    leaky ReLU whose slope a user may change in place."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.act = nn.LeakyReLU(0.1)
        self.register_buffer("scale", torch.tensor(1.0))
        self.classifier = nn.Linear(3 * 6 * 6, 4)

    def features(self, x):
        return self.act(self.conv(x)).flatten(1) * float(self.scale)


def test_a_kept_trace_that_goes_stale_is_replaced():
    from adacore import probe as probe_module

    torch.manual_seed(0)
    model = ReadsItsBuffer()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 1, 8, 8, generator=generator)
    y = torch.randint(0, 4, (300,), generator=generator)
    probe(model, x, y, forward="traced")
    first = probe_module._TRACES[model][1]
    # the buffer changes in place (same tensor, same key): the kept trace holds the old
    # number, fails the check, and a fresh one is traced and used
    model.scale.fill_(3.0)
    assert_same_probe(probe(model, x, y, forward="traced"), probe(model, x, y, forward="eager"))
    second = probe_module._TRACES[model][1]
    assert second is not first
    # a setting changed in place, by less than the check could see: a new key
    model.act.negative_slope = 0.1 + 1e-6
    assert_same_probe(probe(model, x, y, forward="traced"), probe(model, x, y, forward="eager"))
    assert probe_module._TRACES[model][1] is not second
    # a forward hook added: a new key too
    third = probe_module._TRACES[model][1]
    handle = model.act.register_forward_hook(lambda module, inputs, output: output * 2)
    assert_same_probe(probe(model, x, y, forward="traced"), probe(model, x, y, forward="eager"))
    assert probe_module._TRACES[model][1] is not third
    handle.remove()


class RefusesTracing(LastLayerModel):
    """A convolutional model whose features cannot be traced at all."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.classifier = nn.Linear(3 * 6 * 6, 4)

    def features(self, x):
        if torch.jit.is_tracing():
            raise RuntimeError("this model cannot be traced")
        return torch.relu(self.conv(x)).flatten(1)


class LeavesTorch(RefusesTracing):
    """Traces without an error but wrongly: the round trip through NumPy is recorded as
    the constant features of the rows it was traced on."""

    def features(self, x):
        hidden = torch.relu(self.conv(x)).flatten(1)
        return torch.from_numpy(np.tanh(hidden.numpy()))


class ScalesInPython(RefusesTracing):
    """Traces without an error, with the right shapes but wrong values: the trace keeps
    the Python number of the rows it was traced on."""

    def features(self, x):
        return torch.relu(self.conv(x)).flatten(1) * float(x.abs().max())


@pytest.mark.parametrize("model_class", [RefusesTracing, LeavesTorch, ScalesInPython])
def test_an_untraceable_model_runs_eagerly(model_class, monkeypatch):
    monkeypatch.setattr("adacore.probe._TRACED_MIN_EXAMPLES", 1)
    torch.manual_seed(0)
    model = model_class()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 1, 8, 8, generator=generator)
    y = torch.randint(0, 4, (300,), generator=generator)
    result = probe(model, x, y, space="last_layer")
    assert result.forward == "eager"
    model.eval()
    with torch.no_grad():
        hidden = model.features(x)
        expected = torch.softmax(model.classifier(hidden), dim=1) - F.one_hot(y, 4)
    weight_part = result.grads[:, :-4].reshape(300, 4, -1)
    torch.testing.assert_close(weight_part, expected[:, :, None] * hidden[:, None, :])
    with pytest.raises(InputError, match="forward"):
        probe(model, x, y, forward="traced")


@pytest.mark.parametrize("space,hessian", [(space, hessian) for space in SPACES
                                           for hessian in ("closed_form", None)
                                           if (space, hessian) != (SPACES[2], None)])
def test_float32_terms_written_in_place_equal_the_float64_ones(space, hessian):
    # float32 closed forms are written straight into the outputs; float64 ones (checked
    # against autograd above) go through temporaries: the two must agree
    model, (x, y) = small_model(5), small_data(5, n=50)
    double = probe(model, x, y, space=space, hessian=hessian, batch_size=7)
    single = probe(model.float(), x.float(), y, space=space, hessian=hessian, batch_size=7)
    torch.testing.assert_close(single.grads, double.grads, rtol=1e-4, atol=1e-5)
    if hessian is not None and space != "last_layer_output_preconditioned":
        torch.testing.assert_close(single.hessian_diag, double.hessian_diag, rtol=1e-4,
                                   atol=1e-5)

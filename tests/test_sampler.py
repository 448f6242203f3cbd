"""CoresetSampler: a DataLoader over files read per item, against independent references."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

matplotlib.use("Agg")
import matplotlib.image  # noqa: E402

from adacore import InputError, get_strategy  # noqa: E402
from adacore.training import CoresetSampler  # noqa: E402

CLASSES = 3
SIDE = 8


def write_pngs(folder, n=60, seed=0):
    """n tiny grayscale PNGs whose mean brightness depends on the class; their labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % CLASSES
    paths = []
    for i, label in enumerate(labels):
        pixels = rng.integers(0, 256, size=(SIDE, SIDE)) / 255.0
        pixels = np.clip(pixels * 0.5 + 0.25 * label, 0.0, 1.0)
        path = folder / f"image_{i:03d}.png"
        matplotlib.image.imsave(path, pixels, cmap="gray", vmin=0.0, vmax=1.0)
        paths.append(path)
    return paths, labels


def read_png(path) -> torch.Tensor:
    image = matplotlib.image.imread(path)           # (H, W, 4) float32 in [0, 1]
    return torch.from_numpy(np.ascontiguousarray(image[..., 0]))


def normalise(image: torch.Tensor) -> torch.Tensor:
    return (image - 0.5) / 0.25


class PngFolder(Dataset):
    """Reads one file per item; normalises, then flips left-right with a seeded draw."""

    def __init__(self, paths, labels, *, augment=True, seed=0):
        self.paths, self.labels = paths, labels
        self.augment = augment
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        image = normalise(read_png(self.paths[index]))
        if self.augment and torch.rand((), generator=self.generator) < 0.5:
            image = image.flip(1)
        return image.reshape(1, SIDE, SIDE), int(self.labels[index])


def mlp(seed=0, width=16):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, width), nn.ReLU(),
                         nn.Linear(width, CLASSES))


def recording(strategy):
    """The strategy, with the inputs of each ``select`` call recorded in ``.calls``."""
    strategy.calls = []
    inner = strategy.select

    def select(grads, labels, **inputs):
        strategy.calls.append({"grads": grads, "labels": labels, **inputs})
        return inner(grads, labels, **inputs)

    strategy.select = select
    return strategy


def test_png_files_workers_visit_exactly_the_coreset_with_its_weights(tmp_path):
    paths, labels = write_pngs(tmp_path)
    train = PngFolder(paths, labels, augment=True, seed=1)
    # sorted pixels survive the flip exactly, so they identify which file a row came from
    signatures = torch.stack([normalise(read_png(p)).flatten().sort().values for p in paths])
    same = (signatures[:, None] == signatures[None]).all(dim=2)
    assert torch.equal(same, torch.eye(len(paths), dtype=torch.bool))

    sampler = CoresetSampler(train, get_strategy("craig", fraction=0.2), seed=3,
                             probe_dataset=PngFolder(paths, labels, augment=False))
    loader = DataLoader(sampler.dataset, batch_size=5, sampler=sampler, num_workers=2)
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    orders = []
    for epoch in range(3):
        assert sampler.select(model, epoch) is True
        coreset = sampler.coreset_
        expected = dict(zip(coreset.indices.tolist(), coreset.normalized_weights().tolist()))
        visited, weights_seen = [], []
        for x, y, w in loader:
            assert x.shape[1:] == (1, SIDE, SIDE) and y.dtype == torch.int64
            assert w.dtype == torch.float32 and w.shape == y.shape
            rows = x.reshape(len(x), -1).sort(dim=1).values
            matches = (rows[:, None] == signatures[None]).all(dim=2)
            assert torch.all(matches.sum(dim=1) == 1)              # each row is one file
            indices = matches.float().argmax(dim=1)
            assert torch.equal(y, torch.as_tensor(labels)[indices])
            visited += indices.tolist()
            weights_seen += w.tolist()
            loss = (w * F.cross_entropy(model(x), y, reduction="none")).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        assert len(sampler) == len(coreset) == 12
        assert sorted(visited) == sorted(expected)                 # the coreset, each once
        assert weights_seen == pytest.approx([expected[i] for i in visited], rel=1e-6)
        assert np.mean(list(expected.values())) == pytest.approx(1.0)
        orders.append(visited)
    assert orders[0] != orders[1]                                  # a fresh order per epoch
    outside = np.setdiff1d(np.arange(len(paths)), sampler.coreset_.indices)
    assert float(sampler.dataset[int(outside[0])][2]) == 0.0


def in_memory(n=36, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, SIDE * SIDE, generator=generator)
    y = torch.arange(n) % CLASSES
    x = x + y[:, None].float()
    return [(x[i], int(y[i])) for i in range(n)], x, y


def flat_mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(SIDE * SIDE, 8), nn.Tanh(), nn.Linear(8, CLASSES))


def autograd_vectors(model, x, y, space):
    """Per-example gradients of cross-entropy, one backward pass per example."""
    rows = []
    last = model[-1]
    for i in range(len(x)):
        if space == "logits":
            logits = model(x[i:i + 1]).detach().requires_grad_(True)
            loss = F.cross_entropy(logits, y[i:i + 1])
            rows.append(torch.autograd.grad(loss, logits)[0][0])
        else:
            loss = F.cross_entropy(model(x[i:i + 1]), y[i:i + 1])
            weight, bias = torch.autograd.grad(loss, [last.weight, last.bias])
            rows.append(torch.cat([weight.flatten(), bias]))
    return torch.stack(rows)


@pytest.mark.parametrize("space", ["logits", "last_layer"])
def test_selection_equals_the_strategy_on_an_independent_probe(space):
    items, x, y = in_memory()
    model = flat_mlp()
    strategy = recording(get_strategy("craig", fraction=0.25))
    sampler = CoresetSampler(items, strategy, space=space, batch_size_probe=7)
    assert sampler.select(model, 0)

    reference_grads = autograd_vectors(model, x, y, space)
    passed = strategy.calls[0]
    assert torch.allclose(passed["grads"], reference_grads, atol=1e-6)
    assert np.array_equal(passed["labels"], y.numpy())
    assert "hessian_diag" not in passed and "steps" not in passed
    reference = get_strategy("craig", fraction=0.25).select(reference_grads, y.numpy())
    assert np.array_equal(sampler.coreset_.indices, reference.indices)
    assert np.allclose(sampler.coreset_.weights, reference.weights)


class Rescaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = flat_mlp()

    def forward(self, x):
        return 2.0 * self.body(x)


@pytest.mark.parametrize("model", [
    nn.Sequential(nn.Linear(SIDE * SIDE, 8), nn.ReLU(), nn.Linear(8, CLASSES), nn.Softmax(dim=1)),
    Rescaled()], ids=["softmax_after", "rescaled_output"])
def test_last_layer_hook_refuses_a_layer_after_the_last_linear(model):
    items, _, _ = in_memory()
    sampler = CoresetSampler(items, get_strategy("gradmatch", fraction=0.25))
    assert sampler.space == "last_layer"
    with pytest.raises(InputError, match="not the model's output"):
        sampler.select(model, 0)


def test_adacore_gets_the_closed_form_hessian_and_the_steps():
    items, x, y = in_memory()
    model = flat_mlp()
    strategy = recording(get_strategy("adacore", fraction=0.25))
    sampler = CoresetSampler(items, strategy, select_every=2)
    loader = DataLoader(sampler.dataset, batch_size=4, sampler=sampler)
    chosen, orders = [], []
    for epoch in range(4):
        chosen.append(sampler.select(model, epoch, steps=2 * len(loader)))
        assert sum(len(y) for _, y, _ in loader) == 9
        orders.append(list(sampler))
    assert chosen == [True, False, True, False]
    assert sorted(orders[0]) == sorted(orders[1]) and orders[0] != orders[1]
    assert [call["steps"] for call in strategy.calls] == [0, 2 * 3]  # ceil(9 / 4) batches
    with torch.no_grad():
        probabilities = torch.softmax(model(x), dim=1)
    passed = strategy.calls[0]
    assert torch.allclose(passed["hessian_diag"], probabilities * (1 - probabilities),
                          atol=1e-6)
    assert len(sampler) == len(sampler.coreset_) == 9
    indices = list(sampler)
    assert sorted(indices) == sorted(sampler.coreset_.indices.tolist())


def test_persistent_workers_read_each_rounds_weights():
    items, x, _ = in_memory()
    sampler = CoresetSampler(items, get_strategy("random", fraction=0.5, seed=2))
    loader = DataLoader(sampler.dataset, batch_size=6, sampler=sampler, num_workers=1,
                        persistent_workers=True)
    coresets = []
    for epoch in range(2):
        sampler.select(flat_mlp(), epoch)
        coresets.append(set(sampler.coreset_.indices.tolist()))
        seen = {}
        for xb, _, wb in loader:
            for row, weight in zip(xb, wb.tolist()):
                seen[int((x == row).all(dim=1).float().argmax())] = weight
        assert set(seen) == coresets[-1]
        assert all(weight == pytest.approx(1.0) for weight in seen.values())
    assert coresets[0] != coresets[1]


def test_glister_selects_against_the_validation_dataset():
    items, _, _ = in_memory()
    val, _, _ = in_memory(n=12, seed=1)
    with pytest.raises(InputError, match="val_dataset"):
        CoresetSampler(items, get_strategy("glister", fraction=0.25))
    sampler = CoresetSampler(items, get_strategy("glister", fraction=0.25), val_dataset=val)
    assert sampler.select(flat_mlp(), 0)
    assert len(sampler) == 9


class Items(Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


@pytest.mark.parametrize("items, message", [
    ([], "empty dataset"),
    ([torch.zeros(3)], "expected an \\(x, y\\) pair"),
    ([(torch.zeros(3), 1, 0)], "of length 3"),
    ([(torch.zeros(3), 1.0)], "expected an integer class label"),
    ([(torch.zeros(3), torch.tensor([0.0]))], "expected an integer class label"),
])
def test_bad_items_are_refused(items, message):
    with pytest.raises(InputError, match=message):
        CoresetSampler(Items(items), get_strategy("craig", fraction=0.5))


def test_bad_model_output_and_no_selection_yet():
    items, _, _ = in_memory()
    sampler = CoresetSampler(items, get_strategy("craig", fraction=0.25))
    assert len(sampler) == 0
    with pytest.raises(InputError, match="call sampler.select"):
        iter(sampler)
    with pytest.raises(InputError, match=r"expected logits of shape \(7, classes\)"):
        CoresetSampler(items, get_strategy("craig", fraction=0.25),
                       batch_size_probe=7).select(nn.Flatten(0), 0)


@pytest.mark.parametrize("method", ["adacore", "craig", "gradmatch", "random", "rs2", "full"])
def test_coreset_loader_refuses_what_is_not_in_memory_with_one_clear_error(method):
    # the same InputError for every method, before any probe or batch; a NumPy array
    # is taken as the tensor it holds
    from torch.utils.data import DataLoader, TensorDataset

    from adacore import get_strategy
    from adacore.models import MLP
    from adacore.training import CoresetLoader
    from adacore.validation import InputError

    x = torch.randn(60, 5, generator=torch.Generator().manual_seed(0))
    y = torch.arange(60) % 3
    strategy = lambda: get_strategy(method, fraction=0.1)         # noqa: E731
    for bad in (TensorDataset(x, y), DataLoader(TensorDataset(x, y), batch_size=10),
                x.tolist(), np.array(["a"] * 60)):
        with pytest.raises(InputError, match=r"^x: .*(CoresetSampler|numbers)"):
            CoresetLoader(bad, y, strategy())
    for bad in (y.float() + 0.5, y[:, None], y[:50]):
        with pytest.raises(InputError, match=r"^y: "):
            CoresetLoader(x, bad, strategy())
    torch.manual_seed(0)
    model = MLP(in_features=5, hidden=(8,), num_classes=3)
    from_numpy = CoresetLoader(x.numpy(), y.numpy(), strategy(), batch_size=4)
    from_tensor = CoresetLoader(x, y, strategy(), batch_size=4)
    for (xa, ya, wa), (xb, yb, wb) in zip(from_numpy.epoch(model), from_tensor.epoch(model)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(wa, wb)

"""Models: shapes, the last-layer interface, parameter counts derived by hand, init, dtypes."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adacore.models import (MLP, BasicBlock, ChannelPadShortcut, LastLayerModel,
                            LastLayerWrapper, LeNet5, ModelSpec, ResNet, ResNet18, ResNet20,
                            available_models, build_model, cifar_resnet, features_and_logits,
                            last_layer, penultimate, register_model)
from adacore.models import registry
from adacore.validation import InputError

torch.set_num_threads(2)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# (factory, input shape of one example, expected penultimate width). Small images keep
# the file fast; the ResNets take any side, LeNet needs its configured one.
CASES = {
    "mlp": (lambda: MLP(), (1, 28, 28), 100),
    "mlp_deep_tanh": (lambda: MLP(20, (16, 8), 3, "tanh"), (20,), 8),
    "linear": (lambda: MLP(20, (), 4), (20,), 20),
    "lenet28": (lambda: LeNet5(), (1, 28, 28), 84),
    "lenet32": (lambda: LeNet5(3, 10, 32), (3, 32, 32), 84),
    "resnet20": (lambda: ResNet20(), (3, 16, 16), 64),
    "resnet8_B": (lambda: cifar_resnet(8, 5, 1, shortcut="B"), (1, 12, 12), 64),
    "resnet18": (lambda: ResNet18(), (3, 16, 16), 512),
}


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: factory() for name, (factory, _, _) in CASES.items()}


def batch(name, n=3, dtype=torch.float32):
    generator = torch.Generator().manual_seed(1)
    return torch.randn(n, *CASES[name][1], generator=generator, dtype=dtype)


# ----------------------------------------------------------------- shapes and interface

@pytest.mark.parametrize("name", CASES)
def test_output_and_feature_shapes(models, name):
    model = models[name].eval()
    x = batch(name, n=3)
    with torch.no_grad():
        logits = model(x)
        hidden = model.features(x)
    width = CASES[name][2]
    assert isinstance(model, LastLayerModel)
    assert hidden.shape == (3, width)
    assert logits.shape == (3, model.classifier.out_features)
    assert model.feature_dim == width == last_layer(model).in_features


@pytest.mark.parametrize("name", CASES)
def test_forward_is_classifier_of_features_exactly(models, name):
    model = models[name].eval()
    x = batch(name)
    with torch.no_grad():
        logits = model(x)
        by_parts = model.classifier(model.features(x))
        hidden, logits_helper = features_and_logits(model, x)
    assert torch.equal(logits, by_parts)
    assert torch.equal(logits, logits_helper)
    assert torch.equal(hidden, penultimate(model, x))
    assert last_layer(model) is model.classifier


@pytest.mark.parametrize("name", CASES)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    model = CASES[name][0]().train()
    x = batch(name, n=4)
    y = torch.arange(4) % model.num_classes
    F.cross_entropy(model(x), y).backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, param_name
        assert torch.isfinite(param.grad).all(), param_name
        assert param.grad.abs().sum() > 0, param_name


@pytest.mark.parametrize("name", CASES)
def test_float64_matches_float32(models, name):
    model32 = models[name].eval()
    model64 = copy.deepcopy(model32).double()
    x = batch(name)
    with torch.no_grad():
        out32 = model32(x)
        out64 = model64(x.double())
        hidden64 = model64.features(x.double())
    assert out64.dtype == hidden64.dtype == torch.float64
    assert all(p.dtype == torch.float64 for p in model64.parameters())
    torch.testing.assert_close(out64.float(), out32, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["mlp", "lenet28", "resnet20", "resnet8_B"])
def test_runs_on_meta_device_so_no_tensor_is_pinned_to_cpu(name):
    model = CASES[name][0]().to("meta")
    x = torch.empty(2, *CASES[name][1], device="meta")
    hidden, logits = features_and_logits(model, x)
    assert logits.device.type == hidden.device.type == "meta"
    assert logits.shape == (2, model.num_classes)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["mlp", "lenet28", "resnet20", "resnet18"])
def test_cuda_matches_cpu(models, name):
    model = models[name].eval()
    x = batch(name)
    with torch.no_grad():
        expected = model(x)
        got = copy.deepcopy(model).cuda()(x.cuda()).cpu()
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------ parameter counts by hand

def conv(c_in, c_out, k):
    return c_in * c_out * k * k  # all ResNet convolutions are bias-free


def bn(c):
    return 2 * c


def linear(d_in, d_out):
    return d_in * d_out + d_out


def resnet_count(widths, blocks, in_channels, classes, projections):
    total = conv(in_channels, widths[0], 3) + bn(widths[0])
    c_in = widths[0]
    for stage, (width, count) in enumerate(zip(widths, blocks)):
        for block in range(count):
            total += conv(c_in, width, 3) + bn(width) + conv(width, width, 3) + bn(width)
            reshapes = c_in != width or (stage > 0 and block == 0)
            if projections and reshapes:
                total += conv(c_in, width, 1) + bn(width)
            c_in = width
    return total + linear(c_in, classes)


def test_resnet20_parameter_count_option_a():
    expected = resnet_count((16, 32, 64), (3, 3, 3), 3, 10, projections=False)
    assert expected == 269_722  # the published ~0.27M of He et al. 2016
    assert n_params(ResNet20()) == expected
    # option B adds 16*32 + 32*64 projection weights and their batch norms
    assert n_params(ResNet20(shortcut="B")) == expected + 512 + 2048 + 64 + 128 == 272_474
    assert n_params(ResNet20(num_classes=100, in_channels=1)) == resnet_count(
        (16, 32, 64), (3, 3, 3), 1, 100, projections=False)


@pytest.mark.parametrize("depth", [8, 32, 56])
def test_cifar_resnet_depth_and_count(depth):
    n = (depth - 2) // 6
    model = cifar_resnet(depth)
    assert n_params(model) == resnet_count((16, 32, 64), (n,) * 3, 3, 10, projections=False)
    # depth counts the weighted layers: the convolutions plus the classifier
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == depth
    assert all(c.kernel_size == (3, 3) for c in convs)


def test_cifar_resnet_published_counts():
    assert n_params(cifar_resnet(32)) == 464_154
    assert n_params(cifar_resnet(110)) == 1_727_962


def test_resnet18_cifar_count_and_structure():
    model = ResNet18()
    expected = resnet_count((64, 128, 256, 512), (2, 2, 2, 2), 3, 10, projections=True)
    assert expected == 11_173_962
    assert n_params(model) == expected
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs].count((1, 1)) == 3  # projection shortcuts
    assert len(convs) - 3 + 1 == 18
    stem = convs[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert not any(isinstance(m, (nn.MaxPool2d, ChannelPadShortcut)) for m in model.modules())


def test_mlp_and_lenet_counts():
    assert n_params(MLP()) == linear(784, 100) + linear(100, 10) == 79_510
    assert n_params(MLP(784, (), 10)) == linear(784, 10)
    lenet = (6 * 25 + 6) + (6 * 16 * 25 + 16) + linear(400, 120) + linear(120, 84) \
        + linear(84, 10)
    assert n_params(LeNet5()) == lenet == 61_706
    assert n_params(LeNet5(3, 10, 32)) == lenet + 2 * 6 * 25
    # 28x36 input: padded, 16 maps of 5x7 after the convolutions
    assert LeNet5(1, 10, (28, 36)).fc[0].in_features == 16 * 5 * 7


# ------------------------------------------------------------------ option-A shortcut

def test_channel_pad_shortcut_has_no_parameters_and_pads_with_zeros():
    shortcut = ChannelPadShortcut(16, 32, stride=2)
    assert list(shortcut.parameters()) == [] and list(shortcut.buffers()) == []
    x = torch.randn(2, 16, 7, 7)
    out = shortcut(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert not out[:, :8].any() and not out[:, 24:].any()
    odd = ChannelPadShortcut(3, 8, stride=1)(x[:, :3])
    assert odd.shape == (2, 8, 7, 7)
    assert torch.equal(odd[:, 2:5], x[:, :3]) and not odd[:, :2].any() and not odd[:, 5:].any()


def test_channel_pad_shortcut_rejects_fewer_output_channels():
    with pytest.raises(InputError, match="out_channels"):
        ChannelPadShortcut(32, 16, 2)


def test_resnet20_uses_option_a_where_shape_changes():
    model = ResNet20()
    shortcuts = [m.shortcut for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(shortcuts) == 9
    pads = [s for s in shortcuts if isinstance(s, ChannelPadShortcut)]
    assert [(s.in_channels, s.out_channels, s.stride) for s in pads] == [(16, 32, 2),
                                                                          (32, 64, 2)]
    assert sum(isinstance(s, nn.Identity) for s in shortcuts) == 7
    # odd sides: the strided 3x3 convolution and the subsampling agree (ceil(side / 2))
    assert model.eval()(torch.randn(2, 3, 9, 9)).shape == (2, 10)


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_basic_block_adds_the_shortcut(shortcut):
    block = BasicBlock(8, 16, stride=2, shortcut=shortcut).eval()
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        nn.init.zeros_(block.bn2.weight)  # residual branch now outputs exactly zero
        assert torch.equal(block(x), torch.relu(block.shortcut(x)))
        nn.init.ones_(block.bn2.weight)
        branch = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
        torch.testing.assert_close(block(x), torch.relu(branch + block.shortcut(x)))
    identity = BasicBlock(8, 8, stride=1, shortcut=shortcut)
    assert isinstance(identity.shortcut, nn.Identity)


# --------------------------------------------------------------------- initialisation

def test_kaiming_init_of_convolutions_and_batch_norm():
    torch.manual_seed(0)
    model = ResNet18()
    conv_weight = model.stages[3][1].conv2.weight  # 512 x 512 x 3 x 3
    fan_out = 512 * 9
    assert conv_weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.02)
    assert conv_weight.mean().abs().item() < 1e-3
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert not module.bias.any()


def test_kaiming_init_of_hidden_linear_layers():
    torch.manual_seed(0)
    hidden = MLP().body[1]
    assert hidden.weight.std().item() == pytest.approx(math.sqrt(2 / 784), rel=0.02)
    assert not hidden.bias.any()
    tanh = MLP(784, (100,), 10, "tanh").body[1]
    xavier = 5 / 3 * math.sqrt(2 / (784 + 100))
    assert tanh.weight.std().item() == pytest.approx(xavier, rel=0.02)


def test_zero_init_residual_makes_blocks_start_as_identity_branches():
    model = ResNet20(zero_init_residual=True)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert all(not b.bn2.weight.any() for b in blocks)


# ---------------------------------------------------------------- input validation

def test_mlp_rejects_wrong_input_width_and_bad_arguments():
    with pytest.raises(InputError, match="784"):
        MLP()(torch.randn(2, 3, 32, 32))
    with pytest.raises(InputError, match="activation"):
        MLP(activation="swishy")
    with pytest.raises(InputError, match=r"hidden\[1\]"):
        MLP(hidden=(10, 0))
    with pytest.raises(InputError, match="hidden"):
        MLP(hidden=100)


def test_mlp_without_hidden_layers_is_linear_in_the_flattened_input():
    model = MLP(12, (), 3)
    x = torch.randn(5, 3, 4)
    assert torch.equal(model.features(x), x.reshape(5, 12))


def test_lenet_flat_rows_equal_images_and_wrong_shapes_fail():
    model = LeNet5().eval()
    images = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(images.reshape(4, 784)), model(images))
        assert torch.equal(model(images[:, 0]), model(images))
    with pytest.raises(InputError, match=r"\(n, 1, 28, 28\)"):
        model(torch.randn(4, 1, 32, 32))
    with pytest.raises(InputError, match="image_size"):
        LeNet5(image_size=11)


def test_lenet_is_the_textbook_relu_then_pool_network_in_values_and_gradients():
    # LeNet5 pools before its ReLUs (cheaper); the textbook order, written with
    # torch.nn.functional on the same weights, must give the same logits and gradients
    torch.manual_seed(3)
    model = LeNet5()
    images = torch.randn(16, 1, 28, 28)
    labels = torch.randint(0, 10, (16,))
    first, second = model.conv[0], model.conv[3]

    def textbook(x):
        x = F.max_pool2d(F.relu(first(x)), 2)
        x = F.max_pool2d(F.relu(second(x)), 2).flatten(1)
        return model.classifier(model.fc(x))

    logits = model(images)
    assert torch.equal(logits, textbook(images))
    ours = torch.autograd.grad(F.cross_entropy(logits, labels), list(model.parameters()))
    theirs = torch.autograd.grad(F.cross_entropy(textbook(images), labels),
                                 list(model.parameters()))
    for got, expected in zip(ours, theirs):
        assert torch.equal(got, expected)
    assert sum(float(g.abs().sum()) for g in ours) > 0


@pytest.mark.parametrize("depth", [7, 21, 0, True, 20.0])
def test_cifar_resnet_rejects_depths_not_6n_plus_2(depth):
    with pytest.raises(InputError, match="depth"):
        cifar_resnet(depth)


def test_resnet_rejects_mismatched_stages_and_shortcut():
    with pytest.raises(InputError, match="blocks_per_stage"):
        ResNet((16, 32), (2,))
    with pytest.raises(InputError, match="shortcut"):
        ResNet20(shortcut="C")


# ---------------------------------------------------------- user models and the helpers

class UserNet(LastLayerModel):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.Tanh())
        self.classifier = nn.Linear(6, 3)

    def features(self, x):
        return self.body(x)


class DuckNet(nn.Module):
    """Has the interface's two members without subclassing it."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Linear(5, 4)
        self.classifier = nn.Linear(4, 2)

    def features(self, x):
        return torch.relu(self.trunk(x))

    def forward(self, x):
        return self.classifier(self.features(x))


def test_user_subclass_works_with_the_helpers():
    model = UserNet()
    x = torch.randn(7, 3, 4)
    hidden = penultimate(model, x)
    assert torch.equal(hidden, model.body(x))
    assert last_layer(model) is model.classifier
    hidden, logits = features_and_logits(model, x)
    assert torch.equal(logits, model(x)) and logits.shape == (7, 3)
    assert model.num_classes == 3 and model.feature_dim == 6


def test_duck_typed_and_wrapped_models_work():
    duck = DuckNet()
    x = torch.randn(3, 5)
    assert torch.equal(penultimate(duck, x), duck.features(x))
    parallel = nn.DataParallel(duck)
    assert last_layer(parallel) is duck.classifier
    assert torch.equal(features_and_logits(parallel, x)[1], duck(x))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # raised inside torch's own imports
def test_compiled_model_is_looked_through():
    model = DuckNet()
    compiled = torch.compile(model)  # wrapping only; nothing is compiled until called
    assert last_layer(compiled) is model.classifier


def test_subclass_without_features_cannot_be_built():
    class NoFeatures(LastLayerModel):
        pass

    with pytest.raises(TypeError, match="features"):
        NoFeatures()


def test_wrapper_from_sequential_shares_parameters():
    sequential = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    model = LastLayerWrapper.from_sequential(sequential)
    x = torch.randn(4, 5)
    assert torch.equal(model(x), sequential(x))
    assert last_layer(model) is sequential[2]
    assert torch.equal(penultimate(model, x), sequential[:2](x))
    with pytest.raises(InputError, match="ReLU"):
        LastLayerWrapper.from_sequential(nn.Sequential(nn.Linear(5, 8), nn.ReLU()))
    with pytest.raises(InputError, match="classifier"):
        LastLayerWrapper(nn.Identity(), nn.Sequential(nn.Linear(2, 2)))


class ConvFeatures(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.classifier = nn.Linear(2, 2)

    def features(self, x):
        return self.conv(x)  # forgot to pool and flatten


class SequentialHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.classifier = nn.Sequential(nn.Linear(4, 2))

    def features(self, x):
        return x


def test_models_without_the_interface_raise_clear_errors():
    with pytest.raises(InputError, match="no `features"):
        last_layer(nn.Sequential(nn.Linear(3, 2)))
    no_head = DuckNet()
    del no_head.classifier
    with pytest.raises(InputError, match="DuckNet has no `classifier`"):
        penultimate(no_head, torch.randn(2, 5))
    with pytest.raises(InputError, match="`classifier` of type Sequential"):
        last_layer(SequentialHead())
    with pytest.raises(InputError, match=r"returned shape \(2, 2, 3, 3\).*\(n, 2\)"):
        penultimate(ConvFeatures(), torch.randn(2, 1, 5, 5))
    with pytest.raises(InputError, match="nn.Module"):
        last_layer(lambda x: x)
    with pytest.raises(InputError, match="LastLayerModel"):
        last_layer(nn.ReLU())


# ----------------------------------------------------------------------------- registry

def test_build_model_unknown_name_lists_choices():
    with pytest.raises(InputError) as error:
        build_model("vgg16", num_classes=10, input_shape=(3, 32, 32))
    for name in ("mlp", "lenet", "resnet20", "resnet18"):
        assert repr(name) in str(error.value)


@pytest.mark.parametrize("name, shape, cls, width", [
    ("mlp", (1, 28, 28), MLP, 100),
    ("mlp", (784,), MLP, 100),
    ("linear", (20,), MLP, 20),
    ("lenet", (1, 28, 28), LeNet5, 84),
    ("lenet", (28, 28), LeNet5, 84),
    ("lenet", (3, 32, 32), LeNet5, 84),
    ("resnet20", (3, 32, 32), ResNet20, 64),
    ("resnet32", (1, 28, 28), ResNet, 64),
    ("resnet18", (3, 32, 32), ResNet18, 512),
])
def test_build_model_reads_the_input_shape(name, shape, cls, width):
    model = build_model(name, num_classes=7, input_shape=shape)
    assert type(model) is cls and model.training
    assert model.num_classes == 7 and model.feature_dim == width
    if name != "resnet18":  # the big one is covered by the shape tests above
        x = torch.randn(2, *shape)
        assert model(x).shape == (2, 7)


def test_build_model_passes_options_and_rejects_unknown_ones():
    model = build_model("mlp", num_classes=3, input_shape=(10,), hidden=(8, 4),
                        activation="gelu")
    assert model.hidden == (8, 4) and model.activation == "gelu"
    assert build_model("resnet20", num_classes=10, input_shape=(3, 8, 8),
                       shortcut="B").shortcut_type == "B"
    with pytest.raises(InputError, match="hidden"):
        build_model("linear", num_classes=3, input_shape=(10,), hidden=(8,))
    with pytest.raises(InputError, match="depth"):
        build_model("resnet56", num_classes=3, input_shape=(3, 8, 8), depth=20)
    with pytest.raises(InputError, match="width_multiplier"):
        build_model("resnet18", num_classes=3, input_shape=(3, 8, 8), width_multiplier=2)


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "lenet", "input_shape": (784,)}, r"\(1, 28, 28\)"),
    ({"name": "resnet20", "input_shape": (3, 0, 32)}, "input_shape"),
    ({"name": "mlp", "input_shape": 784}, "input_shape"),
    ({"name": "mlp", "input_shape": (784,), "num_classes": 0}, "num_classes"),
    ({"name": "mlp", "input_shape": (784,), "seed": -1}, "seed"),
    ({"name": "mlp", "input_shape": (784,), "dtype": torch.int64}, "dtype"),
])
def test_build_model_validates_its_arguments(kwargs, match):
    kwargs = {"num_classes": 10, **kwargs}
    with pytest.raises(InputError, match=match):
        build_model(**kwargs)


def test_build_model_seed_fixes_weights_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    first = build_model("lenet", num_classes=10, input_shape=(1, 28, 28), seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    second = build_model("lenet", num_classes=10, input_shape=(1, 28, 28), seed=3)
    other = build_model("lenet", num_classes=10, input_shape=(1, 28, 28), seed=4)
    for (key, a), b, c in zip(first.state_dict().items(), second.state_dict().values(),
                              other.state_dict().values()):
        assert torch.equal(a, b), key
    assert not torch.equal(first.classifier.weight, other.classifier.weight)


def test_build_model_dtype():
    model = build_model("resnet20", num_classes=10, input_shape=(3, 8, 8),
                        dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert model(torch.randn(2, 3, 8, 8, dtype=torch.float64)).dtype == torch.float64


def test_register_model(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    def user_net(num_classes, in_features):
        return LastLayerWrapper(nn.Sequential(nn.Linear(in_features, 6), nn.ReLU()),
                                nn.Linear(6, num_classes))

    register_model("user", ModelSpec(user_net, lambda name, shape: {
        "in_features": math.prod(shape)}))
    assert "user" in available_models()
    model = build_model("user", num_classes=4, input_shape=(2, 3))
    assert penultimate(model, torch.randn(5, 6)).shape == (5, 6)
    with pytest.raises(InputError, match="not yet registered"):
        register_model("user", ModelSpec(user_net, lambda name, shape: {}))

    register_model("broken", ModelSpec(lambda num_classes: nn.Linear(3, num_classes),
                                       lambda name, shape: {}))
    with pytest.raises(InputError, match="features"):
        build_model("broken", num_classes=2, input_shape=(3,))

"""Weight initialisation shared by the models (He et al. 2015 where the layer feeds a ReLU).

Convolutions: Kaiming normal, ``fan_out`` mode, ReLU gain (as in the reference ResNet
implementations); batch norm: weight 1, bias 0. Hidden linear layers: Kaiming normal
``fan_in`` for ReLU-like activations, Xavier normal for tanh / sigmoid; bias 0. The last
layer keeps PyTorch's default initialisation (uniform in +-1/sqrt(fan_in)).
Every function draws from the global torch generator, so seeding it (as
:func:`adacore.models.build_model` does) fixes the weights.
"""

from __future__ import annotations

from torch import nn

__all__ = ["init_conv_and_norm_", "init_hidden_linear_"]


def init_conv_and_norm_(module: nn.Module) -> None:
    """Re-initialise every ``Conv2d`` and batch-norm layer inside ``module`` in place.

    Parameters
    ----------
    module : nn.Module
        Searched recursively; other layers are left untouched.
    """
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm)):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


def init_hidden_linear_(layer: nn.Linear, activation: str = "relu") -> None:
    """Initialise a hidden ``nn.Linear`` that feeds ``activation``, in place.

    Parameters
    ----------
    layer : nn.Linear
        The layer to re-initialise.
    activation : str
        ``"relu"``, ``"gelu"`` (treated as ReLU), ``"leaky_relu"`` (slope 0.01):
        Kaiming normal, ``fan_in``; ``"tanh"``, ``"sigmoid"``: Xavier normal with the
        activation's gain.
    """
    if activation in ("relu", "gelu"):
        nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
    elif activation == "leaky_relu":
        nn.init.kaiming_normal_(layer.weight, a=0.01, mode="fan_in",
                                nonlinearity="leaky_relu")
    else:
        nn.init.xavier_normal_(layer.weight, gain=nn.init.calculate_gain(activation))
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)

"""Models in plain torch, all split into penultimate features and a linear last layer.

Every model is a :class:`LastLayerModel`: ``features(x)`` gives the ``(n, D)`` input of
the last layer ``classifier`` (an ``nn.Linear``) and ``forward(x)`` is
``classifier(features(x))``. Probes use :func:`penultimate`, :func:`last_layer` and
:func:`features_and_logits`, which work for any model with that interface; see
:mod:`adacore.models.interface` for how to make your own model fit.

=============  ==================================================  ======  ==========
name           model                                               D       parameters
=============  ==================================================  ======  ==========
``mlp``        :class:`MLP` 784-100-10                             100     79,510
``linear``     :class:`MLP` with no hidden layer                   784     7,850
``lenet``      :class:`LeNet5` (28x28, 1 channel)                  84      61,706
``resnet20``   :class:`ResNet20`, option-A shortcuts               64      269,722
``resnet18``   :class:`ResNet18`, CIFAR variant                    512     11,173,962
=============  ==================================================  ======  ==========

(parameters for 10 classes; ``resnet32``/``44``/``56``/``110`` come from
:func:`cifar_resnet`.)
"""

from adacore.models.interface import (LastLayerModel, LastLayerWrapper, features_and_logits,
                                      last_layer, penultimate)
from adacore.models.lenet import LeNet5
from adacore.models.mlp import MLP
from adacore.models.registry import (ModelSpec, available_models, build_model,
                                     register_model, takes_images)
from adacore.models.resnet import (BasicBlock, ChannelPadShortcut, ResNet, ResNet18, ResNet20,
                                   cifar_resnet)

__all__ = ["takes_images", 
    "LastLayerModel", "LastLayerWrapper", "last_layer", "penultimate", "features_and_logits",
    "MLP", "LeNet5", "ResNet", "ResNet20", "ResNet18", "cifar_resnet", "BasicBlock",
    "ChannelPadShortcut", "build_model", "register_model", "available_models", "ModelSpec",
]

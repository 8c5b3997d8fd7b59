"""What each dataset is, for settings checked before anything loads: examples available for
training + validation (the rest is the official test set), the validation split held out by
default, the input shape and the number of classes. Pure Python."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    train_pool: int
    validation: int
    input_shape: tuple
    classes: int = 10
    synthetic: bool = False


DATASETS = {
    "fashion_mnist": DatasetSpec(60000, 10000, (28, 28, 1)),
    "cifar10": DatasetSpec(50000, 5000, (32, 32, 3)),
    "cifar10_synthetic": DatasetSpec(6000, 500, (32, 32, 3), synthetic=True),
}


def names() -> list[str]:
    return sorted(DATASETS)

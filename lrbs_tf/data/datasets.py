"""Loading a dataset by name (:mod:`.fashion_mnist`, :mod:`.cifar10`) into the arrays of its
splits (:mod:`.splits`), and the data of a run (:func:`load_for`)."""

from __future__ import annotations

from lrbs_tf.data import cifar10, fashion_mnist
from lrbs_tf.data.specs import DATASETS
from lrbs_tf.data.splits import Data, DataError, Split, fingerprint, seeded_split


def load_dataset(name: str, **kwargs) -> Data:
    """Load a registered dataset by name (see :mod:`lrbs_tf.data.specs`)."""
    loaders = {
        "fashion_mnist": fashion_mnist.load_fashion_mnist,
        "cifar10": cifar10.load_cifar10,
        "cifar10_synthetic": lambda **kw: cifar10.load_cifar10(synthetic=True, **kw),
    }
    if name not in loaders:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(loaders))}")
    if name != "fashion_mnist":
        kwargs = {k: v for k, v in kwargs.items() if k != "allow_download"}
    if kwargs.get("validation_size") is None:
        kwargs["validation_size"] = DATASETS[name].validation
    return loaders[name](**kwargs)


def load_for(config) -> Data:
    """The data of a run: its dataset with its split (seed, sizes) and data folder, from a
    :class:`~lrbs_tf.training.config.RunConfig` or the ``config`` of a saved ``config.json``
    (where the validation size is recorded as resolved)."""
    if not isinstance(config, dict):
        config = dict(vars(config), validation_size=config.val_size)
    return load_dataset(
        config["dataset"],
        data_dir=config.get("data_dir"),
        validation_size=config["validation_size"],
        train_size=config.get("train_size"),
        seed=config["seed"],
    )


__all__ = ["Data", "DataError", "Split", "fingerprint", "seeded_split", "load_dataset", "load_for"]

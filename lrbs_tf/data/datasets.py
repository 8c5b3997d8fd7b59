"""Loading a dataset — a registered name (:mod:`.fashion_mnist`, :mod:`.cifar10`) or any
source :mod:`.sources` describes (tfds, an image folder, an .npz) — into the arrays of its
splits (:mod:`.splits`), and the data of a run (:func:`load_for`)."""

from __future__ import annotations

from lrbs_tf.data import cifar10, fashion_mnist, sources
from lrbs_tf.data.specs import DATASETS
from lrbs_tf.data.splits import Data, DataError, Split, fingerprint, seeded_split


def load_dataset(name: str, **kwargs) -> Data:
    """Load a dataset by name: a registered one (see :mod:`lrbs_tf.data.specs`) or any
    source :mod:`lrbs_tf.data.sources` takes (``tfds:NAME``, an image folder, an ``.npz``)."""
    if sources.kind_of(name) != "registered":
        kwargs.pop("allow_download", None)
        return sources.load(
            name, **{"validation_size": None, "train_size": None, "seed": 0, **kwargs}
        )
    loaders = {
        "fashion_mnist": fashion_mnist.load_fashion_mnist,
        "cifar10": cifar10.load_cifar10,
        "cifar10_synthetic": lambda **kw: cifar10.load_cifar10(synthetic=True, **kw),
    }
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

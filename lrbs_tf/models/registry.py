"""Building registered models (the entries are in :mod:`lrbs_tf.models.specs`).

Every builder returns a functional :class:`~lrbs_tf.core.optimizers.RatioModel` producing
logits; :func:`register_model` adds your own (a functional or Sequential model works with the
probes, which clone it layer by layer).
"""

from __future__ import annotations

import importlib
import os

import keras

from lrbs_tf.models import specs

__all__ = ["build_model", "register_model", "MODELS"]

MODELS = specs.MODELS


def register_model(name: str, settings: tuple = (), xla: bool = False, description: str = ""):
    """Decorator adding a builder ``fn(input_shape, num_classes, **options)`` to the registry;
    ``settings`` names the run settings it takes (e.g. ``("width",)``)."""

    def decorate(fn):
        MODELS[name] = specs.ModelSpec(fn, tuple(settings), xla, description or fn.__doc__ or "")
        return fn

    return decorate


def builder(name: str):
    entry = specs.spec(name).builder
    if callable(entry):
        return entry
    module, _, function = entry.partition(":")
    return getattr(importlib.import_module(module), function)


def build_model(
    name: str,
    input_shape,
    num_classes: int,
    seed: int | None = None,
    synchronized_bn: bool = False,
    **options,
) -> keras.Model:
    """Build registered model ``name``; ``seed`` makes the initial weights reproducible.

    ``synchronized_bn`` makes every BatchNormalization layer compute its batch statistics over
    the global batch under a ``tf.distribute`` strategy (as one device would), instead of per
    replica.
    """
    make = builder(name)
    if seed is not None:
        keras.utils.set_random_seed(seed)
    model = make(tuple(input_shape), num_classes, **options)
    if synchronized_bn:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True
    return model


def build_for(config, strategy=None) -> keras.Model:
    """The model of a run's settings (its registry entry's settings, its seed, its data's
    shape), BatchNorm over the global batch under a strategy."""
    from lrbs_tf.data.specs import DATASETS

    data = DATASETS[config.dataset]
    return build_model(
        config.model,
        data.input_shape,
        data.classes,
        seed=config.seed,
        synchronized_bn=strategy is not None,
        **specs.options(config),
    )


class ModelFileError(ValueError):
    """A file that is not a Keras model archive; the message is one line."""


def load_model(path: str, **kwargs) -> keras.Model:
    """``keras.models.load_model`` with lrbs_tf's own classes registered (RatioModel, the
    ratio-scaled optimizer, ResNet's ShortcutA). A ``.keras`` file that is not a zip archive
    raises :class:`ModelFileError` saying so (Keras says "File not found")."""
    import zipfile

    import lrbs_tf.core.optimizers  # noqa: F401
    import lrbs_tf.models.convnets  # noqa: F401

    if str(path).endswith(".keras") and os.path.isfile(path) and not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path} is not a Keras model file (.keras files are zip archives)")
    return keras.models.load_model(path, **kwargs)

"""Building registered models (the entries are in :mod:`lrbs_tf.models.specs`).

Every builder returns a functional :class:`~lrbs_tf.core.optimizers.RatioModel` producing
logits; :func:`register_model` adds your own. A user's model may also be subclassed, inheriting
:class:`~lrbs_tf.core.optimizers.RatioTrainStep` (it is checked by a call on the data's shape,
and the probes copy it from its config).
"""

from __future__ import annotations

import importlib
import os

import keras

from lrbs_tf import compat
from lrbs_tf.models import sources, specs

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
        _synchronize_bn(model)
    return model


def build_for(config, strategy=None) -> keras.Model:
    """The model of a run's settings — a registered model, a user's builder or a saved model
    file (:mod:`lrbs_tf.models.sources`) — for its data's shape and classes, with its seed,
    BatchNorm over the global batch under a strategy, as a RatioModel; a user's model is
    checked (:func:`checked`). Raises :class:`~lrbs_tf.models.sources.ModelError`."""
    from lrbs_tf.data import sources as data_sources

    data = data_sources.describe(config.dataset, config.data_dir)
    source = sources.describe(config.model)
    if source.kind == "registered":
        return build_model(
            config.model,
            data.input_shape,
            data.classes,
            seed=config.seed,
            synchronized_bn=strategy is not None,
            **sources.options(config),
        )
    if source.kind == "file":
        model = _load_start(source)
    else:
        keras.utils.set_random_seed(config.seed)
        try:
            model = sources.builder(config.model)(
                tuple(data.input_shape), data.classes, **sources.options(config)
            )
        except (Exception, SystemExit) as e:  # the user's builder failed: say so in one line
            raise sources.ModelError(f"--model {config.model} {sources.failure(e)}") from None
    model = checked(model, config.model, data.input_shape, data.classes)
    if strategy is not None:
        _synchronize_bn(model)
    return model


def _load_start(source) -> keras.Model:
    try:
        return load_model(source.path, compile=False)
    except Exception as e:  # Keras raises many types for files it cannot read
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        raise sources.ModelError(
            f"cannot load --model {source.spec}: {type(e).__name__}: {first}"
        ) from None


def checked(model, spec: str, input_shape, classes: int) -> keras.Model:
    """``model`` as a RatioModel (a subclassed model: as it is), refused (ModelError, one line)
    unless it takes ``input_shape`` and produces ``classes`` logits and is functional,
    Sequential, or subclassed with ``RatioTrainStep`` among its bases."""
    from lrbs_tf.core.optimizers import RatioTrainStep, as_ratio_model

    if not isinstance(model, keras.Model):
        raise sources.ModelError(f"--model {spec} gave a {type(model).__name__}, not a Keras model")
    if not getattr(model, "inputs", None) and not isinstance(model, keras.Sequential):
        if not isinstance(model, RatioTrainStep):
            name = type(model).__name__
            raise sources.ModelError(
                f"--model {spec} builds a subclassed model ({name}), whose train step does "
                "not give the optimizer each batch's size: inherit "
                f"lrbs_tf.optimizers.RatioTrainStep first, class Ratio{name}(RatioTrainStep, "
                f"{name}), and return that"
            )
        return _checked_subclassed(model, spec, input_shape, classes)
    try:
        model = as_ratio_model(model)
    except ValueError as e:
        raise sources.ModelError(f"--model {spec}: {e}") from None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise sources.ModelError(f"--model {spec} must have one input and one output")
    given = tuple(model.inputs[0].shape[1:])
    if len(given) != len(input_shape) or any(
        g is not None and g != d for g, d in zip(given, input_shape)
    ):
        raise sources.ModelError(
            f"--model {spec} takes inputs of shape {given}, the data has {tuple(input_shape)}"
        )
    _check_outputs(tuple(model.outputs[0].shape[1:]), spec, classes)
    if _ends_in_softmax(model):
        raise sources.ModelError(
            f"--model {spec} ends in a softmax: lrbs_tf trains on logits "
            "(from_logits=True); remove the final softmax"
        )
    return model


def _check_outputs(out: tuple, spec: str, classes: int) -> None:
    if out != (classes,):
        raise sources.ModelError(
            f"--model {spec} outputs shape {out}, the data has {classes} classes: "
            f"end with Dense({classes}) producing logits"
        )


def _checked_subclassed(model, spec: str, input_shape, classes: int) -> keras.Model:
    """A subclassed model, built by a call on two examples of the data's shape (random, so a
    softmax shows as rows summing to 1) and checked like the others."""
    import numpy as np

    x = np.random.default_rng(0).uniform(size=(2, *input_shape)).astype("float32")
    try:
        out = np.asarray(model(x, training=False))
    except (Exception, SystemExit) as e:
        raise sources.ModelError(
            f"--model {spec} cannot take inputs of shape {tuple(input_shape)}: "
            f"{sources.failure(e).removeprefix('raised ')}"
        ) from None
    _check_outputs(tuple(out.shape[1:]), spec, classes)
    if (out >= 0).all() and np.allclose(out.sum(axis=-1), 1.0, atol=1e-5):
        raise sources.ModelError(
            f"--model {spec} outputs probabilities (rows summing to 1): lrbs_tf trains on "
            "logits (from_logits=True); remove the final softmax"
        )
    try:
        model.get_config()
    except NotImplementedError:
        raise sources.ModelError(
            f"--model {spec}: {type(model).__name__} has no get_config, which saving it and "
            "the probes' copy need: give it one returning its __init__ arguments"
        ) from None
    return model


def _ends_in_softmax(model) -> bool:
    last = model.layers[-1]
    return isinstance(last, keras.layers.Softmax) or getattr(last, "activation", None) in (
        keras.activations.softmax,
    )


def _synchronize_bn(model) -> None:
    for layer in compat.all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True


def check_user_model(config) -> None:
    """Build (or load) a user's model and check it, before a run writes anything; a registered
    model needs no check. Once per process for the same model source, data and width (the
    command line checks before it claims the run folder, :func:`~lrbs_tf.training.run.train`
    again for library callers)."""
    source = sources.describe(config.model)
    if source.kind == "registered":
        return
    key = (source.spec, source.sha256, config.dataset, config.data_dir, config.width)
    if key not in _CHECKED:
        build_for(config)
        _CHECKED.add(key)


_CHECKED: set = set()  # the user's models check_user_model has built and accepted


class ModelFileError(ValueError):
    """A file that is not a Keras model archive; the message is one line."""


def load_run_model(
    run_dir: str, config: dict, trust_code: bool = False, file: str | None = None, **kwargs
):
    """The ``model.keras`` (or another model ``file`` it keeps, such as a snapshot) of a run
    folder, whose ``config.json`` holds ``config``: loaded
    with Keras' safe mode and lrbs_tf's own classes, without importing anything the folder
    names; only if Keras needs classes it does not know is the builder's module imported,
    and only once its file matches the digest the folder recorded
    (:func:`~lrbs_tf.models.sources.vouched_builder`; ``trust_code`` skips the comparison).
    Raises :class:`~lrbs_tf.models.sources.UntrustedCodeError`, :class:`ModelFileError` or
    what Keras raises for a file it cannot read."""
    path = file or os.path.join(run_dir, "model.keras")
    model = config.get("model") if isinstance(config, dict) else None
    try:
        return load_model(path, **kwargs)
    except (TypeError, ValueError):  # e.g. a custom layer Keras cannot locate
        if not isinstance(model, str) or sources.kind_of(model) != "builder":
            raise
    sources.vouched_builder(config.get("model_source"), model, trust_code)
    return load_model(path, model, **kwargs)


def load_model(path: str, model: str | None = None, **kwargs) -> keras.Model:
    """``keras.models.load_model`` with lrbs_tf's own classes registered (RatioModel, the
    ratio-scaled optimizer, ResNet's ShortcutA) and, when ``model`` is the ``--model`` of the
    run that saved it and names a user's builder, the builder's module imported first (so
    that the custom layers it registers load) and its Keras classes given by name (a
    subclassed model that is not registered). A ``.keras`` file that is not a zip archive
    raises :class:`ModelFileError` saying so (Keras says "File not found")."""
    import zipfile

    import lrbs_tf.core.optimizers  # noqa: F401
    import lrbs_tf.models.convnets  # noqa: F401

    if model is not None and sources.kind_of(model) == "builder":
        sources.builder(model)  # the custom layers it registers; unregistered ones by name:
        kwargs["custom_objects"] = sources.keras_classes(model) | (
            kwargs.get("custom_objects") or {}
        )

    if str(path).endswith(".keras") and os.path.isfile(path) and not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path} is not a Keras model file (.keras files are zip archives)")
    return keras.models.load_model(path, **kwargs)

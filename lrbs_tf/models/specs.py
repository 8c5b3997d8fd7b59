"""The model registry's entries: name, builder, the run settings the builder takes, and whether
``--jit auto`` compiles it with XLA. Pure Python, so that a run's settings are checked before
TensorFlow loads; :func:`lrbs_tf.models.registry.register_model` adds entries at run time."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """``builder``: ``"module:function"`` (imported when a model is built) or the function;
    ``settings``: run settings passed to it as keyword arguments (``width`` for the MLP);
    ``xla``: ``--jit auto`` uses XLA for it (when the run has few distinct batch sizes);
    ``defaults``: the builder's defaults of those settings (what a run records when it leaves
    them unset)."""

    builder: str | Callable
    settings: tuple = ()
    xla: bool = False
    description: str = ""
    defaults: dict = dataclasses.field(default_factory=dict)


MODELS = {
    "mlp": ModelSpec(
        "lrbs_tf.models.mlp:mlp",
        ("width",),
        xla=True,
        description="the paper's 4-layer batch-normalised ReLU MLP",
        defaults={"width": 256},
    ),
    "vgg11": ModelSpec(
        "lrbs_tf.models.convnets:vgg11", description="VGG11 with BatchNorm for 32×32 images"
    ),
    "resnet56": ModelSpec(
        "lrbs_tf.models.convnets:resnet56", description="the CIFAR ResNet56 of He et al. (2016)"
    ),
}


def names() -> list[str]:
    return sorted(MODELS)


def spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(names())}")
    return MODELS[name]

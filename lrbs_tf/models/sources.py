"""What ``--model`` names: a registered model, a builder of the user's, or a saved model file.

- a registered name (:mod:`lrbs_tf.models.specs`: ``mlp``, ``vgg11``, ``resnet56``, or one
  added with :func:`lrbs_tf.models.registry.register_model`);
- ``module:function`` — a builder ``function(input_shape, num_classes, **options)`` returning a
  functional or Sequential Keras model that outputs logits; ``module`` is an importable module
  (``my_pkg.models``, the current folder is searched too) or a ``.py`` file
  (``examples/small_cnn.py``). The run settings it takes (today ``width``) are the ones its
  signature names;
- ``path/to/model.keras`` — a saved Keras model (compiled or not) whose weights are the run's
  starting point.

A run records :meth:`ModelSource.record` in ``config.json``: the import path or file and the
sha256 of the builder's source file or of the model file, so that a run resumes only with the
model it started with. Describing a registered model or a file imports nothing; a builder's
module is imported (and with it Keras, when the module uses it).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys

from lrbs_tf.models import specs
from lrbs_tf.settings import ConfigError

BUILDER_SETTINGS = ("width",)  # run settings a user's builder may take by name


class ModelError(ConfigError):
    """A ``--model`` that cannot be used; the message is one line."""


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """``spec`` as given; ``kind`` ``registered``, ``builder`` or ``file``; ``label``, a short
    name for run names; the run settings the builder takes; XLA under ``--jit auto``; the
    builder's source file or the model file and its sha256."""

    spec: str
    kind: str
    label: str
    settings: tuple = ()
    xla: bool = False
    path: str | None = None
    sha256: str | None = None

    def record(self) -> dict | None:
        """What ``config.json`` records (None for a registered model: its name says it)."""
        if self.kind == "registered":
            return None
        what = "import" if self.kind == "builder" else "file"
        return {"kind": self.kind, what: self.spec, "path": self.path, "sha256": self.sha256}


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as e:
        raise ModelError(f"cannot read {path}: {e.strerror}") from None
    return digest.hexdigest()


def kind_of(model: str) -> str:
    if not isinstance(model, str) or not model:
        raise ModelError(f"--model must name a model, got {model!r}")
    if model in specs.MODELS:
        return "registered"
    if model.endswith(".keras"):
        return "file"
    if ":" in model:
        return "builder"
    raise ModelError(
        f"unknown model {model!r}: give {', '.join(specs.names())}, module:function "
        "(a builder of your own) or a saved model file ending in .keras"
    )


def describe(model: str) -> ModelSource:
    """The :class:`ModelSource` of ``--model``; raises ModelError (one line)."""
    kind = kind_of(model)
    if kind == "registered":
        entry = specs.MODELS[model]
        return ModelSource(model, kind, model, tuple(entry.settings), entry.xla)
    if kind == "file":
        if not os.path.isfile(model):
            raise ModelError(f"--model {model}: no such file")
        label = os.path.splitext(os.path.basename(model))[0]
        return ModelSource(model, kind, _label(label), (), False, os.path.abspath(model),
                           sha256_of(model))  # fmt: skip
    function = builder(model)
    path = inspect.getsourcefile(function) or sys.modules[function.__module__].__file__
    settings = tuple(s for s in BUILDER_SETTINGS if s in inspect.signature(function).parameters)
    return ModelSource(model, kind, _label(function.__name__), settings, False,
                       os.path.abspath(path), sha256_of(path))  # fmt: skip


def _label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_=+-]+", "_", text).strip("_")[:40] or "model"


def builder(model: str):
    """The function ``module:function`` names (its module imported); raises ModelError."""
    module_name, _, name = model.rpartition(":")
    module = _import(module_name, model)
    if not hasattr(module, name):
        raise ModelError(f"--model {model}: {module_name} has no attribute {name!r}")
    function = getattr(module, name)
    if not callable(function):
        raise ModelError(
            f"--model {model}: {name} is a {type(function).__name__}, not a function "
            "fn(input_shape, num_classes, **options)"
        )
    try:
        inspect.signature(function).bind((1, 1, 1), 2)
    except TypeError:
        raise ModelError(
            f"--model {model}: {name} must take (input_shape, num_classes, **options)"
        ) from None
    except ValueError:  # a builtin without a signature: let the call decide
        pass
    return function


@functools.cache
def _import(module_name: str, model: str):
    if not module_name:
        raise ModelError(f"--model {model}: give module:function")
    try:
        if module_name.endswith(".py"):
            return _import_file(module_name, model)
        if os.getcwd() not in sys.path:
            sys.path.append(os.getcwd())
        return importlib.import_module(module_name)
    except ModelError:
        raise
    except ModuleNotFoundError as e:
        raise ModelError(f"--model {model}: cannot import {module_name} ({e})") from None
    except Exception as e:  # the user's module raised while importing
        raise ModelError(
            f"--model {model}: importing {module_name} failed: {type(e).__name__}: {e}"
        ) from None


def _import_file(path: str, model: str):
    if not os.path.isfile(path):
        raise ModelError(f"--model {model}: no such file {path}")
    name = "lrbs_user_" + _label(os.path.splitext(os.path.basename(path))[0])
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # so that Keras finds the classes it defines when loading
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def options(config) -> dict:
    """The keyword arguments the model of ``config`` takes from the run settings."""
    return {key: getattr(config, key) for key in describe(config.model).settings}

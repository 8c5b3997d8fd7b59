"""What ``--model`` names: a registered model, a builder of the user's, or a saved model file.

- a registered name (:mod:`lrbs_tf.models.specs`: ``mlp``, ``vgg11``, ``resnet56``, or one
  added with :func:`lrbs_tf.models.registry.register_model`);
- ``module:function`` — a builder ``function(input_shape, num_classes, **options)`` returning a
  Keras model that outputs logits (functional, Sequential, or subclassed with
  ``RatioTrainStep`` first among its bases); ``module`` is an importable module
  (``my_pkg.models``, the current folder is searched too) or a ``.py`` file
  (``examples/small_cnn.py``). The run settings it takes (today ``width``) are the ones its
  signature names;
- ``path/to/model.keras`` — a saved Keras model (compiled or not) whose weights are the run's
  starting point.

A run records :meth:`ModelSource.record` in ``config.json``: the import path or file and the
sha256 of the builder's module file (the file importing it executes, found by :func:`locate`
without executing anything) or of the model file, so that a run resumes only with the model it
started with. Describing a registered model or a file imports nothing; a builder's module is
imported (and with it Keras, when the module uses it).

**A run folder is data, never code.** A ``config.json`` names a builder; a folder someone sent
you could name any file. :func:`vouched_builder` is the only way code named in a run folder is
imported: the module file is located without executing it, its sha256 must equal the one the
folder recorded, and only then is it imported (``trust_code=True``, the commands'
``--trust-code``, skips the comparison on the user's word). The digest proves that the file is
the one the run trained with; it does not make a stranger's code safe, so commands import a
builder from a run folder only when Keras needs the classes it defines
(:func:`lrbs_tf.models.registry.load_run_model`).
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


class UntrustedCodeError(ModelError):
    """A run folder names a builder whose module file does not match its recorded digest."""


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
    path = locate(model)
    digest = sha256_of(path)
    function = builder(model)
    settings = tuple(s for s in BUILDER_SETTINGS if s in _parameters(function))
    return ModelSource(model, kind, _label(function.__name__), settings, False, path, digest)


def _parameters(function) -> tuple:
    try:
        return tuple(inspect.signature(function).parameters)
    except (TypeError, ValueError):  # a builtin without a signature
        return ()


def locate(model: str) -> str:
    """The source file that importing the module of ``module:function`` executes, found
    without executing anything (not even a parent package); raises ModelError when there is
    no such Python file (a built-in or compiled module, a namespace package, nothing found)."""
    module_name = model.rpartition(":")[0]
    if not module_name:
        raise ModelError(f"--model {model}: give module:function")
    if module_name.endswith(".py"):
        if not os.path.isfile(module_name):
            raise ModelError(f"--model {model}: no such file {module_name}")
        return os.path.abspath(module_name)
    loaded = sys.modules.get(module_name)
    origin = getattr(loaded, "__file__", None) if loaded else _find_origin(module_name, model)
    if not origin or not origin.endswith(".py") or not os.path.isfile(origin):
        raise ModelError(
            f"--model {model}: {module_name} is not a Python source file "
            f"({origin or 'built into Python'}); give a builder in a .py file or module"
        )
    return os.path.abspath(origin)


def _find_origin(module_name: str, model: str) -> str | None:
    import importlib.machinery

    path = sys.path + ([os.getcwd()] if os.getcwd() not in sys.path else [])
    spec = None
    for part in module_name.split("."):
        if path is None:  # a parent that is a plain module, not a package
            break
        try:
            spec = importlib.machinery.PathFinder.find_spec(part, path)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            if part == module_name and part in sys.builtin_module_names:
                return None
            raise ModelError(
                f"--model {model}: cannot import {module_name} (no module named {part!r})"
            )
        path = spec.submodule_search_locations
    return spec.origin if spec and spec.has_location else None


def vouched_builder(record: dict | None, model: str, trust_code: bool = False):
    """Import the builder a run folder names (``model``, its ``config.json``'s ``model``) only
    if its module file still has the sha256 the folder recorded (``record``, the folder's
    ``model_source``); raises :class:`UntrustedCodeError` (one line) otherwise, unless
    ``trust_code``. Returns the builder function."""
    if not trust_code:
        recorded = (record or {}).get("sha256") if isinstance(record, dict) else None
        path = locate(model)
        if not isinstance(recorded, str):
            raise UntrustedCodeError(
                f"the run folder names the builder {model} but records no sha256 of its "
                f"source: not importing {path} (pass --trust-code to import it anyway)"
            )
        if sha256_of(path) != recorded:
            raise UntrustedCodeError(
                f"{path} is not the builder the run folder recorded (sha256 {recorded[:12]}…, "
                f"the file has {sha256_of(path)[:12]}…): not importing it (pass --trust-code "
                "to import it anyway)"
            )
    return builder(model)


def keras_classes(model: str) -> dict:
    """The Keras layers and models the builder's module (``module:function``, imported)
    defines or imports, by class name: what loading its saved model needs when they are not
    registered with ``keras.saving.register_keras_serializable`` (a subclassed model)."""
    import keras

    module = _import(model.rpartition(":")[0], model)
    return {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, type)
        and issubclass(value, keras.layers.Layer)
        and not value.__module__.startswith("keras")
    }


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
    except (Exception, SystemExit) as e:  # the user's module raised or exited while importing
        raise ModelError(f"--model {model}: importing {module_name} {failure(e)}") from None


def failure(error: BaseException) -> str:
    """``raised ValueError: the whole message`` (on one line) or ``called sys.exit(0)``."""
    if isinstance(error, SystemExit):
        return f"called sys.exit({error.code!r})"
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(error)).split())
    text = text.split(" Arguments received by ")[0]  # Keras' echo of the call's arguments
    return f"raised {type(error).__name__}" + (f": {text[:500]}" if text else "")


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
    """The keyword arguments the model of ``config`` takes from the run settings: only those
    the run sets (a setting left at None leaves the builder's own default alone)."""
    values = {key: getattr(config, key) for key in describe(config.model).settings}
    return {key: value for key, value in values.items() if value is not None}

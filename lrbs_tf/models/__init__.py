"""The model registry: every model name, its builder and its per-model defaults.

May import: :mod:`lrbs_tf.core`, :mod:`lrbs_tf.data` (its specs). The entries (:mod:`.specs`) are
pure Python, so that settings can be checked before TensorFlow loads; :mod:`.registry` builds
models; the builders are in :mod:`.mlp` and :mod:`.convnets`.
"""

_LAZY = ("build_model", "build_for", "register_model", "load_model", "MODELS")


def __getattr__(name):  # keras loads only when a model is built
    if name in _LAZY:
        from lrbs_tf.models import registry

        return getattr(registry, name)
    if name == "ShortcutA":  # model files saved by lrbs_tf 0.1 name this module
        from lrbs_tf.models.convnets import ShortcutA

        return ShortcutA
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

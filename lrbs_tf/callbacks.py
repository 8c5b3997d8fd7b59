"""Keras callbacks for anyone's ``model.fit``: :class:`Sharpness` (width and step sharpness, Tr H,
B_simple and 2/η every few epochs; see :mod:`lrbs_tf.probes.callbacks`)."""

from lrbs_tf.probes.callbacks import Sharpness

__all__ = ["Sharpness"]

"""Keras callbacks for anyone's ``model.fit``: :class:`Sharpness` (width and step sharpness, Tr H,
B_simple and 2/η every few epochs; see :mod:`lrbs_tf.probes.callbacks`), :class:`RatioScheduler`
(Keras' ``LearningRateScheduler`` for η/S) and :class:`RatioLogs` (η, η/S and S in every epoch's
logs; see :mod:`lrbs_tf.core.optimizers`)."""

from lrbs_tf.core.optimizers import RatioLogs, RatioScheduler
from lrbs_tf.probes.callbacks import Sharpness

__all__ = ["Sharpness", "RatioScheduler", "RatioLogs"]

"""Sweeps over η/S: keras-tuner's HyperModel whose trials are ordinary runs (:mod:`.tuning`)
and the tables and rank correlations of a sweep (:mod:`.tables`).

May import: :mod:`lrbs_tf.training`, :mod:`lrbs_tf.models`, :mod:`lrbs_tf.distribute`,
:mod:`lrbs_tf.core`.
"""

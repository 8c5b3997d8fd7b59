"""Sweeps over η/S: keras-tuner's HyperModel whose trials are ordinary runs (:mod:`.tuning`)
and the tables and rank correlations of a sweep (:mod:`.tables`).

May import: :mod:`lrbs_tf.training`, :mod:`lrbs_tf.models`, :mod:`lrbs_tf.distribute`,
:mod:`lrbs_tf.core`.
"""

# The default search ranges of RatioHyperModel and tune.py (here, so that the command reads them
# without importing keras-tuner or TensorFlow).
RATIO_RANGE, LR_RANGE = (1e-5, 1e-2), (1e-3, 0.3)

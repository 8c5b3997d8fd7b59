"""Theory you can run: the SDE and Ornstein–Uhlenbeck results and simulators (:mod:`.sde`),
and batch-size advice from a probed run (:mod:`.advice`).

May import: :mod:`lrbs_tf.core`. NumPy and SciPy only, no TensorFlow.
"""

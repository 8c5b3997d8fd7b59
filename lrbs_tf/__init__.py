"""lrbs_tf: the learning-rate-to-batch-size ratio η/S of SGD in Keras 3 / TensorFlow.

Importing the package loads nothing heavy; import the modules you need (``lrbs_tf.optimizers``,
``lrbs_tf.train``, ``lrbs_tf.hessian``, …). See README.md for the map.
"""

__version__ = "0.1.0"

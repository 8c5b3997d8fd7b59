"""Old home of the ratio-scaled optimizer, kept so that ``from lrbs_tf.optimizers import …``
and model files saved by lrbs_tf 0.1 keep working; see :mod:`lrbs_tf.core.optimizers`."""

from lrbs_tf.core.optimizers import *  # noqa: F401,F403
from lrbs_tf.core.optimizers import __all__  # noqa: F401

"""Data: Fashion-MNIST and CIFAR-10 as arrays with seeded splits (:mod:`.datasets`), and the
variable-batch tf.data pipeline that serves each epoch's batches (:mod:`.pipeline`).

May import: :mod:`lrbs_tf.core`, :mod:`lrbs_tf.distribute`.
"""

from lrbs_tf.data.datasets import Data, DataError, Split, load_dataset  # noqa: F401

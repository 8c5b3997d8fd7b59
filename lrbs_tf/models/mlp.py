"""The paper's Fashion-MNIST network (Jastrzębski et al. 2018, Fig. 3): a 4-layer batch-normalised
ReLU MLP, ``Flatten → 4 × [Dense(width, no bias) → BatchNorm → ReLU] → Dense(classes)``
producing logits. The paper does not state the width; 256 is our default. BatchNorm uses
momentum 0.9 for its moving statistics (PyTorch's default, 0.1 in its convention) rather than
Keras' 0.99, whose averages lag far behind in short runs and small subsets (measured: 38 % vs
70 %+ test accuracy after 32 steps).
"""

from __future__ import annotations

import keras

from lrbs_tf.core.optimizers import RatioModel


def mlp(
    input_shape,
    num_classes,
    width: int = 256,
    depth: int = 4,
    dropout: float = 0.0,
    bn_momentum: float = 0.9,
):
    """The paper's batch-normalised ReLU MLP (``depth`` hidden layers of ``width`` units)."""
    inputs = keras.Input(input_shape, name="image")
    h = keras.layers.Flatten()(inputs)
    for i in range(depth):
        h = keras.layers.Dense(width, use_bias=False, name=f"dense_{i}")(h)
        h = keras.layers.BatchNormalization(momentum=bn_momentum, name=f"bn_{i}")(h)
        h = keras.layers.ReLU(name=f"relu_{i}")(h)
        if dropout:
            h = keras.layers.Dropout(dropout, name=f"dropout_{i}")(h)
    logits = keras.layers.Dense(num_classes, name="logits")(h)
    return RatioModel(inputs, logits, name=f"mlp{depth}x{width}")

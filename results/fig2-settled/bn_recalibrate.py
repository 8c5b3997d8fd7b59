"""Is a rule's test-accuracy deficit BatchNorm's moving statistics? (#36, Fig. 2's usual
suspects.) For each run folder: the test accuracy of the final weights as trained (moving
averages, momentum 0.9), and again with every BatchNorm layer's statistics recomputed exactly
over the whole training set (layer by layer, in order: each layer sees the inputs the
recalibrated layers before it give). The weights are not changed.

    python results/fig2-settled/bn_recalibrate.py RUN [RUN ...]
"""

import json
import sys

import keras
import numpy as np

from lrbs_tf.data.datasets import load_for
from lrbs_tf.models.registry import load_run_model


def accuracy(model, x, y) -> float:
    logits = model.predict(x, batch_size=2000, verbose=0)
    return float(np.mean(np.argmax(logits, axis=1) == y))


def recalibrate(model, x) -> None:
    """Set every BatchNorm layer's moving mean and variance to the population statistics of
    its inputs over ``x`` (inference mode before it)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            inputs = keras.Model(model.inputs, layer.input).predict(x, batch_size=2000, verbose=0)
            axes = tuple(range(inputs.ndim - 1))
            layer.moving_mean.assign(inputs.mean(axis=axes))
            layer.moving_variance.assign(inputs.var(axis=axes))


def main() -> None:
    for run in sys.argv[1:]:
        config = json.load(open(f"{run}/config.json"))["config"]
        data = load_for(config)
        model = load_run_model(run, config)
        before = accuracy(model, data.test.x, data.test.y)
        recalibrate(model, data.train.x)
        after = accuracy(model, data.test.x, data.test.y)
        print(
            f"{run.rstrip('/').split('/')[-1]}: test accuracy {before:.4f} as trained, "
            f"{after:.4f} with BatchNorm statistics of the whole training set",
            flush=True,
        )


if __name__ == "__main__":
    main()

"""A user's own script: the small CNN of ``small_cnn.py`` on an image folder, trained in a plain
``model.fit`` at η/S = 0.02/100 with lrbs_tf's ratio-scaled SGD, then probed.

    python examples/train_my_model.py /tmp/clothes3k

The equivalent command line (which adds the run folder, TensorBoard, checkpoints and resume):

    python experiments/run.py --ratio 0.02/100 --epochs 10 \\
        --model examples/small_cnn.py:small_cnn --width 16 --dataset /tmp/clothes3k --probe

The numbers are not the command's (measured, seed 0: 81.8 % test accuracy here, 84.4 % from the
command): here Keras draws the batches (``shuffle=True``) and the weights are initialised from
another random state — one more seed, in effect. The callback probed once, after epoch 5, on
64 examples (λ_max 150.6): 6.8 s, mostly tracing, against 13.7 s of training — on a fit this
short the first probe alone is over the 10 % ``max_overhead``, and it leaves no room for a
second (over 60 epochs the same probe is 10.0 % of 68 s).
"""

import argparse
import os
import sys

import keras

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from examples.small_cnn import small_cnn  # noqa: E402
from lrbs_tf.callbacks import Sharpness  # noqa: E402
from lrbs_tf.data.datasets import load_dataset  # noqa: E402
from lrbs_tf.optimizers import RatioScaledOptimizer, as_ratio_model  # noqa: E402
from lrbs_tf.probes.sampling import text  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="images in class sub-folders (e.g. make_image_folder.py)")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()

    data = load_dataset(args.folder, seed=0)  # the same splits and scaling as the command line
    keras.utils.set_random_seed(0)
    model = as_ratio_model(small_cnn(data.train.x.shape[1:], int(data.train.y.max()) + 1, 16))
    model.compile(
        RatioScaledOptimizer(keras.optimizers.SGD(0.0), ratio=0.02 / 100),  # η = ratio × S
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    train = (data.train.x, data.train.y)
    # every 5 epochs at most, on ≤ 1000 examples, and then only within about 10 % of the
    # training time (max_overhead; the first probe is made anyway, tracing included)
    sharpness = Sharpness(train, every=5, batch_size=100, examples=1000, noise_examples=200)
    model.fit(
        data.train.x,
        data.train.y,
        batch_size=100,
        epochs=args.epochs,
        shuffle=True,
        validation_data=(data.validation.x, data.validation.y),
        callbacks=[sharpness],
        verbose=2,
    )
    loss, accuracy = model.evaluate(data.test.x, data.test.y, batch_size=1000, verbose=0)
    print(f"test accuracy {accuracy:.4f}, loss {loss:.4f}")
    print(
        f"probes after epochs {[h['epoch'] for h in sharpness.history]} on "
        f"{[h['examples'] for h in sharpness.history]} examples: {sharpness.probe_seconds:.1f} s "
        f"against {sharpness.train_seconds:.1f} s of training "
        f"({sharpness.probe_seconds / sharpness.train_seconds:.1%})"
    )
    last = sharpness.history[-1]
    print(
        f"epoch {last['epoch']}: λ_max {last['lambda_max']:.1f}, step sharpness "
        f"{last['step_sharpness']:.1f} against 2/η = {last['stability_2_over_lr']:.0f}, "
        f"B_simple {text(last, 'b_simple')}"
    )


if __name__ == "__main__":
    main()

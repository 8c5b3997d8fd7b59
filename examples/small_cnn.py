"""A small CNN of a user's own: the builder ``--model examples/small_cnn.py:small_cnn`` calls.

Any function ``fn(input_shape, num_classes, **options)`` returning a functional or Sequential
Keras model that outputs logits works the same way.
"""

import keras


def small_cnn(input_shape, num_classes, width=32):
    """Two 3×3 convolutions with BatchNorm and max-pooling, dropout, a dense layer of logits."""
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for filters in (width, 2 * width):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        # momentum 0.9, not Keras' 0.99: the moving statistics (what the probes and the
        # equal-loss check see, BatchNorm in inference mode) settle within ~50 steps
        x = keras.layers.BatchNormalization(momentum=0.9)(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.25)(x)
    outputs = keras.layers.Dense(num_classes)(x)
    return keras.Model(inputs, outputs, name="small_cnn")

"""The Keras documentation's MNIST convnet ("Simple MNIST convnet"), as a builder for
``--model examples/keras_convnet.py:convnet``: two 3×3 convolutions with max-pooling, dropout,
a dense layer of logits (the documentation ends in a softmax; lrbs_tf trains on logits). No
BatchNorm."""

import keras


def convnet(input_shape, num_classes):
    """Conv 32 → pool → Conv 64 → pool → Flatten → Dropout 0.5 → Dense (logits)."""
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Conv2D(32, kernel_size=(3, 3), activation="relu")(inputs)
    x = keras.layers.MaxPooling2D(pool_size=(2, 2))(x)
    x = keras.layers.Conv2D(64, kernel_size=(3, 3), activation="relu")(x)
    x = keras.layers.MaxPooling2D(pool_size=(2, 2))(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.5)(x)
    outputs = keras.layers.Dense(num_classes)(x)
    return keras.Model(inputs, outputs, name="keras_convnet")

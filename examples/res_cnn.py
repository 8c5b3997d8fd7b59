"""A small residual CNN with BatchNorm: ``--model examples/res_cnn.py:res_cnn``.

Three 3×3 convolutions of ``width`` filters with BatchNorm (momentum 0.9, see
``examples/small_cnn.py``) and two ``Add`` shortcuts, global average pooling, a dense layer of
logits. With ``width=16`` on 8×8×1 images (scikit-learn's digits): 5,114 parameters.
"""

import keras


def res_cnn(input_shape, num_classes, width=16):
    inputs = keras.Input(shape=input_shape)
    x = _conv_bn(inputs, width)
    for _ in range(2):
        x = keras.layers.Add()([x, _conv_bn(x, width)])
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x), name="res_cnn")


def _conv_bn(x, width):
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    return keras.layers.ReLU()(x)

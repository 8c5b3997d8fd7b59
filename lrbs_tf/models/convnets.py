"""The paper's CIFAR-10 networks: VGG11 with BatchNorm and the CIFAR ResNet56."""

from __future__ import annotations

import keras

from lrbs_tf.core.optimizers import RatioModel

VGG11_LAYERS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def vgg11(input_shape, num_classes, dropout: float = 0.0, width_multiplier: float = 1.0):
    """VGG11 (Simonyan & Zisserman 2014, configuration A) with BatchNorm for 32×32 inputs.

    The paper adapted "the final layers" to CIFAR-10; as in the common CIFAR versions, the five
    max-pools reduce 32×32 to 1×1 and a single Dense(classes) on the 512 features replaces the
    three 4096-wide ImageNet layers. Convolutions are 3×3 with bias, each followed by BatchNorm
    and ReLU; ``dropout`` (optional) goes before the classifier.
    """
    inputs = keras.Input(input_shape, name="image")
    h = inputs
    for i, layer in enumerate(VGG11_LAYERS):
        if layer == "M":
            h = keras.layers.MaxPooling2D(2, name=f"pool_{i}")(h)
            continue
        filters = max(1, int(layer * width_multiplier))
        h = keras.layers.Conv2D(filters, 3, padding="same", name=f"conv_{i}")(h)
        h = keras.layers.BatchNormalization(momentum=0.9, name=f"bn_{i}")(h)
        h = keras.layers.ReLU(name=f"relu_{i}")(h)
    h = keras.layers.Flatten()(h)
    if dropout:
        h = keras.layers.Dropout(dropout)(h)
    logits = keras.layers.Dense(num_classes, name="logits")(h)
    return RatioModel(inputs, logits, name="vgg11")


def _shortcut_a(x, filters, stride):
    """He et al.'s option A: identity, subsampled and zero-padded in channels (no weights)."""
    if stride == 1 and x.shape[-1] == filters:
        return x
    return ShortcutA(filters - x.shape[-1], stride)(x)


@keras.saving.register_keras_serializable(package="lrbs_tf")
class ShortcutA(keras.layers.Layer):
    """Subsample by ``stride`` and zero-pad ``pad`` channels (half on each side)."""

    def __init__(self, pad: int, stride: int, **kwargs):
        super().__init__(**kwargs)
        self.pad, self.stride = int(pad), int(stride)

    def call(self, x):
        x = x[:, :: self.stride, :: self.stride, :]
        before = self.pad // 2
        return keras.ops.pad(x, [[0, 0], [0, 0], [0, 0], [before, self.pad - before]])

    def get_config(self):
        return dict(super().get_config(), pad=self.pad, stride=self.stride)


def resnet56(input_shape, num_classes, blocks_per_stage: int = 9):
    """The CIFAR ResNet of He et al. (2016, §4.2): 3 stages × ``blocks_per_stage`` basic blocks
    with 16/32/64 filters (6n + 2 = 56 layers for n = 9), BatchNorm, identity shortcuts with
    zero-padding where the shape changes (option A), global average pooling, Dense(classes)."""
    inputs = keras.Input(input_shape, name="image")
    h = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv0")(inputs)
    h = keras.layers.BatchNormalization(momentum=0.9, name="bn0")(h)
    h = keras.layers.ReLU()(h)
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            name = f"s{stage}b{block}"
            y = keras.layers.Conv2D(
                filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1"
            )(h)
            y = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn1")(y)
            y = keras.layers.ReLU()(y)
            y = keras.layers.Conv2D(
                filters, 3, padding="same", use_bias=False, name=f"{name}_conv2"
            )(y)
            y = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn2")(y)
            h = keras.layers.ReLU()(keras.layers.Add()([y, _shortcut_a(h, filters, stride)]))
    h = keras.layers.GlobalAveragePooling2D()(h)
    logits = keras.layers.Dense(num_classes, name="logits")(h)
    return RatioModel(inputs, logits, name=f"resnet{6 * blocks_per_stage + 2}")

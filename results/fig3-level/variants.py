"""The paper's MLP with one BatchNorm setting changed, for the level table (#36):

    --model results/fig3-level/variants.py:mlp_eps1e5       BatchNorm ε = 1e-5 (PyTorch's)
    --model results/fig3-level/variants.py:mlp_momentum099  moving averages with momentum 0.99

Everything else is ``lrbs_tf.models.mlp.mlp`` (width 256, BatchNorm momentum 0.9, ε = 1e-3:
Keras' default ε).
"""

from lrbs_tf.models.mlp import mlp


def mlp_eps1e5(input_shape, num_classes, width: int = 256):
    model = mlp(input_shape, num_classes, width=width)
    for layer in model.layers:
        if hasattr(layer, "epsilon") and hasattr(layer, "moving_variance"):
            layer.epsilon = 1e-5  # read at every call and saved in the layer's config
    return model


def mlp_momentum099(input_shape, num_classes, width: int = 256):
    return mlp(input_shape, num_classes, width=width, bn_momentum=0.99)

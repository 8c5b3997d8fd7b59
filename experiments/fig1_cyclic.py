"""Paper Fig. 1: a cyclic batch size (CBS) matches a cyclic learning rate (CLR) of equal η/S.

    python experiments/fig1_cyclic.py                 # Fashion-MNIST MLP, 24 epochs
    python experiments/fig1_cyclic.py --epochs 300 --model vgg11 --dataset cifar10   # paper

The command is :mod:`lrbs_tf.cli.fig1` (installed as ``lrbs-fig1``); its docstring has the
settings, the measured run time and results.
"""

import sys

from lrbs_tf.cli.fig1 import main

if __name__ == "__main__":
    sys.exit(main())

"""Paper Fig. 4: the loss along the line between trained models, and a random plane.

    python experiments/fig4_interpolation.py            # three Fashion-MNIST MLP runs
    python experiments/fig4_interpolation.py --paper --dataset cifar10 --data-dir DIR

The command is :mod:`lrbs_tf.cli.fig4` (installed as ``lrbs-fig4``); its docstring has the
settings, the measured run time and results.
"""

import sys

from lrbs_tf.cli.fig4 import main

if __name__ == "__main__":
    sys.exit(main())

"""Paper Fig. 5: where the η/S invariance breaks — η = η₀β and S = S₀β for growing β, on
training sets of several sizes.

    python experiments/fig5_breakdown.py                       # Fashion-MNIST MLP variant
    python experiments/fig5_breakdown.py --seeds 0,1,2 --betas 1,3,5,7,9,11,13,15
    python experiments/fig5_breakdown.py --paper --dataset cifar10 --data-dir DIR   # GPU-sized

The command is :mod:`lrbs_tf.cli.fig5` (installed as ``lrbs-fig5``); its docstring has the
settings, the measured run time and results.
"""

import sys

from lrbs_tf.cli.fig5 import main

if __name__ == "__main__":
    sys.exit(main())

"""Search η/S with keras-tuner: random, Bayesian or Hyperband, with a budget.

    python experiments/tune.py --algorithm random --trials 8 --epochs 3
    python experiments/tune.py --algorithm bayesian --trials 20 --ratio-range 1e-6,1e-3 \\
        --batch-sizes 32,128,512 --probe
    python experiments/tune.py --algorithm hyperband --epochs 9 --space lr_batch

The command is :mod:`lrbs_tf.cli.tune` (installed as ``lrbs-tune``); its docstring has the
search spaces, outputs and a measured run.
"""

import sys

from lrbs_tf.cli.tune import main

if __name__ == "__main__":
    sys.exit(main())

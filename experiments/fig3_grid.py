"""Paper Fig. 3: η/S against the curvature and accuracy of the minima SGD reaches.

    python experiments/fig3_grid.py --preset quick       # 6 points, 13 min on 2 cores
    python experiments/fig3_grid.py --preset standard    # 12 points, 1e-5 … 2e-3

The command is :mod:`lrbs_tf.cli.fig3` (installed as ``lrbs-fig3``); its docstring has the
presets, the measured run times and results.
"""

import sys

from lrbs_tf.cli.fig3 import main

if __name__ == "__main__":
    sys.exit(main())

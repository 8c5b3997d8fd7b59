"""How far does η/S carry? Branches from one starting point at k× the batch size, the noise
floor, the SVAG test of the SDE, and the predictions beside them.

    python experiments/scaling_test.py

The command is :mod:`lrbs_tf.cli.scale`; its docstring has the settings and results.
"""

import sys

from lrbs_tf.cli.scale import main

if __name__ == "__main__":
    sys.exit(main())

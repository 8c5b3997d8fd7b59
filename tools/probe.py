"""Probe the curvature and gradient noise of a saved run: λ_max, Tr H, ‖H‖_F, B_simple.

    python tools/probe.py runs/mlp-fashion_mnist-lr0.005-bs640-seed0 [--examples 5000]
        [--bn inference|batch] [--dtype float32|float64] [--json]

The command is :mod:`lrbs_tf.cli.probe` (installed as ``lrbs-probe``).
"""

import sys

from lrbs_tf.cli.probe import main

if __name__ == "__main__":
    sys.exit(main())

"""λ_max of the Hessian on one mini-batch of B training examples (as much 2017-era code
measured it: on a batch, not on thousands of examples), over seeded draws, at a run's final
weights (#36). λ_max of a small batch's Hessian is biased upward: the top eigenvalue of a noisy
matrix exceeds that of its mean.

    python results/fig3-level/batch_lambda.py RUN [B ...]     (default B: 128 1000 5000)
"""

import json
import sys

import numpy as np

from lrbs_tf.data.datasets import load_for
from lrbs_tf.models.registry import load_run_model
from lrbs_tf.probes import spectral
from lrbs_tf.probes.hessian import HessianOperator
from lrbs_tf.probes.prober import probe_subset
from lrbs_tf.probes.settings import ProbeSettings

DRAWS = 10


def main() -> None:
    run = sys.argv[1]
    config = json.load(open(f"{run}/config.json"))["config"]
    data = load_for(config)
    model = load_run_model(run, config)
    n = len(data.train.y)
    for batch in [int(b) for b in sys.argv[2:] or ["128", "1000", "5000"]]:
        found = []
        for seed in range(DRAWS if batch < 5000 else 1):
            idx = probe_subset(n, ProbeSettings(examples=batch, seed=seed))
            op = HessianOperator(model, data.train.x[idx], data.train.y[idx], batch_size=1000)
            eig = spectral.top_eigenvalues(op.matvec, op.dim, k=1, tol=1e-3, seed=seed)
            found.append(float(eig.eigenvalues[0]))
        print(
            f"B = {batch}: λ_max mean {np.mean(found):.4g}, median {np.median(found):.4g}, "
            f"min {min(found):.4g}, max {max(found):.4g} over {len(found)} draws (BN inference)",
            flush=True,
        )


if __name__ == "__main__":
    main()

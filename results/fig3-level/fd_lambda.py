"""λ_max by power iteration on finite-difference Hessian-vector products (as 2017-era code
computed it) against the same iteration on exact HVPs, at a run's final weights (#36).

    python results/fig3-level/fd_lambda.py RUN [EPS ...]     (default EPS: 1e-3)
"""

import json
import sys

import numpy as np

from lrbs_tf.data.datasets import load_for
from lrbs_tf.models.registry import load_run_model
from lrbs_tf.probes.prober import Prober
from lrbs_tf.probes.settings import ProbeSettings

ITERATIONS = 30


def power_iteration(matvec, dim: int, rng) -> tuple[float, float]:
    """``(Rayleigh quotient, ‖Hu‖)`` after :data:`ITERATIONS` steps from a random unit u."""
    u = rng.standard_normal(dim)
    u /= np.linalg.norm(u)
    for _ in range(ITERATIONS):
        hv = matvec(u)
        rayleigh, norm = float(u @ hv), float(np.linalg.norm(hv))
        u = hv / norm
    return rayleigh, norm


def main() -> None:
    run = sys.argv[1]
    config = json.load(open(f"{run}/config.json"))["config"]
    data = load_for(config)
    settings = ProbeSettings(examples=5000, noise_examples=100)  # the Fig. 3 probe's subset
    op = Prober(load_run_model(run, config), data.train.x, data.train.y, settings).op
    g0, rng = op.gradient(), np.random.default_rng(0)
    for eps in [float(e) for e in sys.argv[2:] or ["1e-3"]]:
        fd = lambda u, eps=eps: (op.gradient(eps * u) - g0) / eps  # noqa: E731
        rayleigh, norm = power_iteration(fd, op.dim, rng)
        print(f"eps {eps:g}: FD power iteration Rayleigh {rayleigh:.4g}, ‖Hv‖ {norm:.4g}")
    rayleigh, _ = power_iteration(op.matvec, op.dim, rng)
    print(f"exact HVPs: power iteration {rayleigh:.4g}")


if __name__ == "__main__":
    main()

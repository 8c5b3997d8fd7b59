"""λ_max by power iteration with finite-difference HVPs (as 2017-era code did) against Lanczos on
exact HVPs, at a run's final weights (#36's level question). python fd_lambda.py RUN [EPS...]"""
import json, sys
import numpy as np
from lrbs_tf.data.datasets import load_for
from lrbs_tf.models.registry import load_run_model
from lrbs_tf.probes.prober import Prober
from lrbs_tf.probes.settings import ProbeSettings

run = sys.argv[1]
config = json.load(open(f"{run}/config.json"))["config"]
model = load_run_model(run, config)
data = load_for(config)
prober = Prober(model, data.train.x, data.train.y, ProbeSettings(examples=5000, noise_examples=100))
op = prober.op
g0 = op.gradient()
rng = np.random.default_rng(0)
exact = None
for eps in [float(e) for e in (sys.argv[2:] or ["1e-3"])]:
    u = rng.standard_normal(op.dim); u /= np.linalg.norm(u)
    for it in range(30):
        hv = (op.gradient(eps * u) - g0) / eps
        lam = float(u @ hv); norm = float(np.linalg.norm(hv))
        u = hv / norm
    print(f"eps {eps:g}: FD power iteration Rayleigh {lam:.4g}, ‖Hv‖ {norm:.4g} after 30 iterations", flush=True)
u = rng.standard_normal(op.dim); u /= np.linalg.norm(u)
for it in range(30):
    hv = op.matvec(u); lam = float(u @ hv); u = hv / np.linalg.norm(hv)
print(f"exact HVPs: power iteration {lam:.4g}")

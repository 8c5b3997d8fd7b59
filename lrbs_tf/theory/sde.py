"""SGD near a quadratic minimum: the SDE / Ornstein–Uhlenbeck results and their exact
discrete-time and finite-dataset corrections, with simulators to check them.

Setting (Jastrzębski et al. 2018, §2). Loss L(θ) = ½ θᵀHθ around the minimum θ* = 0, with
H symmetric positive definite. A mini-batch gradient of S examples is g + ξ with E ξ = 0 and
Cov ξ = C/S, so SGD with step η is

    θ_{k+1} = θ_k − η H θ_k + η ξ_k .                                              (1)

**Continuous time.** (1) is the Euler–Maruyama step of dθ = −Hθ dt + √(η/S) R dW with
RRᵀ = C, an Ornstein–Uhlenbeck process whose stationary covariance Σ solves the Lyapunov
equation HΣ + ΣH = (η/S) C (:func:`ou_stationary_covariance`). For C = H the solution is
Σ = (η/2S) I and E[L] = ½ Tr(HΣ) = η/(4S)·Tr H (the paper's Eq. 7,
:func:`expected_loss_continuous`).

**Discrete time (exact).** The covariance of (1) obeys Σ_{k+1} = AΣ_kAᵀ + (η²/S) C with
A = I − ηH; its fixed point solves the discrete Lyapunov equation Σ − AΣA = (η²/S) C
(:func:`sgd_stationary_covariance`). With C = H = V diag(λ) Vᵀ each eigen-direction decouples:
σ_i = (η²/S) λ_i / (1 − (1 − ηλ_i)²) = (η/S) / (2 − ηλ_i) (:func:`sgd_stationary_variance`),
so E[L] = (η/2S) Σ λ_i / (2 − ηλ_i). This recovers η/(4S)·Tr H as ηλ_i → 0 and diverges as
ηλ_max → 2: the breakdown of the η/S scaling for large η, in closed form.

**Finite data set.** A batch of S drawn without replacement from N examples has gradient
covariance (C/S)·(N − S)/(N − 1) (the finite-population correction;
:func:`finite_population_factor`): the effective noise η/S · (N − S)/(N − 1) falls to zero as
S → N, the breakdown in batch size.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.linalg


def _sym(a):
    return 0.5 * (a + a.T)


def ou_stationary_covariance(H: np.ndarray, C: np.ndarray, ratio: float) -> np.ndarray:
    """Σ with HΣ + ΣH = (η/S)·C: the OU process dθ = −Hθdt + √(η/S)·R dW at equilibrium."""
    return _sym(scipy.linalg.solve_continuous_lyapunov(H, ratio * C))


def expected_loss_continuous(H: np.ndarray, C: np.ndarray | None, ratio: float) -> float:
    """½ Tr(HΣ) for the OU covariance; equals η/(4S)·Tr H when C = H (``C=None``)."""
    if C is None:
        return ratio / 4.0 * float(np.trace(H))
    return 0.5 * float(np.trace(H @ ou_stationary_covariance(H, C, ratio)))


def sgd_stationary_covariance(
    H: np.ndarray, C: np.ndarray, lr: float, batch: float, finite_n: int | None = None
) -> np.ndarray:
    """Exact stationary covariance of SGD (1): Σ − AΣA = (η²/S)·C·f with A = I − ηH.

    ``finite_n`` applies the without-replacement factor f = (N − S)/(N − 1) (else f = 1).
    Requires ηλ_max < 2 (otherwise SGD diverges and there is no stationary state).
    """
    eig_max = float(np.linalg.eigvalsh(H).max())
    if lr * eig_max >= 2:
        raise ValueError(f"η·λ_max = {lr * eig_max:.3g} ≥ 2: SGD diverges on this quadratic")
    factor = 1.0 if finite_n is None else finite_population_factor(batch, finite_n)
    A = np.eye(len(H)) - lr * H
    return _sym(scipy.linalg.solve_discrete_lyapunov(A, lr**2 / batch * factor * C))


def sgd_stationary_variance(eigenvalues, lr: float, batch: float) -> np.ndarray:
    """Per eigen-direction stationary variance of SGD with C = H: (η/S) / (2 − ηλ_i)."""
    lam = np.asarray(eigenvalues, dtype=float)
    if np.any(lr * lam >= 2):
        raise ValueError("η·λ_i ≥ 2 for some direction: no stationary state")
    return (lr / batch) / (2.0 - lr * lam)


def expected_loss_discrete(
    H: np.ndarray, C: np.ndarray | None, lr: float, batch: float, finite_n: int | None = None
) -> float:
    """Exact stationary E[L] = ½ Tr(HΣ) of discrete SGD; C = H when ``C`` is None."""
    if C is None and finite_n is None:
        lam = np.linalg.eigvalsh(H)
        return 0.5 * float(np.sum(lam * sgd_stationary_variance(lam, lr, batch)))
    Sigma = sgd_stationary_covariance(H, H if C is None else C, lr, batch, finite_n)
    return 0.5 * float(np.trace(H @ Sigma))


def finite_population_factor(batch: float, n: int) -> float:
    """(N − S)/(N − 1): variance of a without-replacement batch mean relative to i.i.d."""
    if not 1 <= batch <= n:
        raise ValueError(f"batch size {batch} must be between 1 and N = {n}")
    return (n - batch) / (n - 1) if n > 1 else 0.0


@dataclasses.dataclass
class SimulationResult:
    """Stationary E[L] from many independent chains, with its Monte-Carlo standard error."""

    mean_loss: float
    stderr: float
    chains: int
    steps: int
    curve: np.ndarray | None = None  # mean loss over chains at each recorded step

    def to_dict(self) -> dict:
        return {
            "mean_loss": self.mean_loss,
            "stderr": self.stderr,
            "chains": self.chains,
            "steps": self.steps,
        }


def simulate_gaussian_sgd(
    H: np.ndarray,
    C: np.ndarray,
    lr: float,
    batch: float,
    steps: int,
    burn_in: int,
    chains: int = 1000,
    seed: int = 0,
    theta0: np.ndarray | None = None,
    record_every: int = 0,
) -> SimulationResult:
    """SGD (1) with Gaussian gradient noise of covariance C/S, ``chains`` chains at once.

    Each chain's loss is averaged over the ``steps`` after ``burn_in``; chains are independent,
    so the standard error is the spread of the chain means over √chains.
    """
    rng = np.random.default_rng(seed)
    d = len(H)
    L = np.linalg.cholesky(_sym(C) + 1e-15 * np.eye(d))
    theta = np.zeros((chains, d)) if theta0 is None else np.tile(theta0, (chains, 1))
    A = np.eye(d) - lr * H
    scale = lr / np.sqrt(batch)
    total = np.zeros(chains)
    curve = []
    for k in range(burn_in + steps):
        noise = rng.standard_normal((chains, d)) @ L.T
        theta = theta @ A.T + scale * noise
        if k >= burn_in or record_every:
            loss = 0.5 * np.einsum("ci,ij,cj->c", theta, H, theta)
            if k >= burn_in:
                total += loss
            if record_every and k % record_every == 0:
                curve.append(loss.mean())
    per_chain = total / steps
    return SimulationResult(
        float(per_chain.mean()),
        float(per_chain.std(ddof=1) / np.sqrt(chains)),
        chains,
        steps,
        np.array(curve) if record_every else None,
    )


@dataclasses.dataclass
class LeastSquares:
    """A finite least-squares problem L(θ) = (1/2N) Σ (x_nᵀθ − y_n)², minimum θ*.

    Its Hessian is H = XᵀX/N and the per-example gradient covariance at θ* is
    C = (1/N) Σ r_n² x_n x_nᵀ with residuals r_n — close to, but not exactly, H·mean(r²).
    """

    X: np.ndarray
    y: np.ndarray

    @classmethod
    def random(
        cls, n: int, d: int, noise: float = 1.0, seed: int = 0, spectrum: np.ndarray | None = None
    ) -> LeastSquares:
        rng = np.random.default_rng(seed)
        scales = np.ones(d) if spectrum is None else np.sqrt(spectrum)
        X = rng.standard_normal((n, d)) * scales
        y = X @ rng.standard_normal(d) + noise * rng.standard_normal(n)
        return cls(X, y)

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def hessian(self) -> np.ndarray:
        return self.X.T @ self.X / self.n

    @property
    def minimum(self) -> np.ndarray:
        return np.linalg.lstsq(self.X, self.y, rcond=None)[0]

    def excess_loss(self, theta: np.ndarray) -> np.ndarray:
        """L(θ) − L(θ*) = ½ (θ − θ*)ᵀH(θ − θ*) for rows of θ."""
        delta = theta - self.minimum
        return 0.5 * np.einsum("ci,ij,cj->c", delta, self.hessian, delta)

    def gradient_covariance(self) -> np.ndarray:
        residual = self.X @ self.minimum - self.y
        G = self.X * residual[:, None]
        return G.T @ G / self.n  # the mean gradient at θ* is zero


def simulate_least_squares_sgd(
    problem: LeastSquares,
    lr: float,
    batch: int,
    steps: int,
    burn_in: int,
    chains: int = 500,
    seed: int = 0,
    replace: bool = False,
) -> SimulationResult:
    """SGD with real mini-batches of a finite data set (without replacement within a batch,
    or with it); E[L] − L* averaged as in :func:`simulate_gaussian_sgd`."""
    rng = np.random.default_rng(seed)
    X, y, n = problem.X, problem.y, problem.n
    theta = np.tile(problem.minimum, (chains, 1))
    total = np.zeros(chains)
    for k in range(burn_in + steps):
        if replace:
            idx = rng.integers(0, n, size=(chains, batch))
        else:
            idx = np.argpartition(rng.random((chains, n)), batch - 1, axis=1)[:, :batch]
        xb = X[idx]  # chains × S × d
        residual = np.einsum("csd,cd->cs", xb, theta) - y[idx]
        grad = np.einsum("cs,csd->cd", residual, xb) / batch
        theta = theta - lr * grad
        if k >= burn_in:
            total += problem.excess_loss(theta)
    per_chain = total / steps
    return SimulationResult(
        float(per_chain.mean()), float(per_chain.std(ddof=1) / np.sqrt(chains)), chains, steps
    )

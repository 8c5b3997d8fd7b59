"""Matrix-free estimators for a symmetric operator given as ``matvec(v) -> H v`` (numpy, float64).

Everything here works on any symmetric linear operator — a Hessian from
:class:`lrbs_tf.probes.hessian.HessianOperator`, a gradient covariance, or a test matrix — so each
estimator is tested against matrices with known spectra.

* :func:`lanczos` — Lanczos tridiagonalisation with full re-orthogonalisation.
* :func:`top_eigenvalues` — largest (algebraic) eigenvalues by Lanczos, stopping when the Ritz
  residuals ‖H y − θ y‖ = |β_m s_{m,i}| fall below ``tol·|θ|``; returns residuals and flags.
* :func:`power_iteration` — largest-magnitude eigenvalues by power iteration with deflation
  (orthogonalisation against found vectors), stopping on the residual, not only on the change.
* :func:`hutchinson_trace`, :func:`hutchpp_trace` — Tr H with a standard error
  (Hutchinson 1989; Hutch++, Meyer, Musco, Musco & Woodruff 2021).
* :func:`hutchinson_frobenius` — ‖H‖_F from E‖Hz‖² = Tr H² for Rademacher z.
* :func:`slq_density` — spectral density by stochastic Lanczos quadrature (Ghorbani, Krishnan &
  Xiao 2019; Papyan 2020).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

MatVec = Callable[[np.ndarray], np.ndarray]


def _rademacher(rng: np.random.Generator, dim: int, count: int | None = None) -> np.ndarray:
    shape = (dim,) if count is None else (count, dim)
    return rng.integers(0, 2, size=shape).astype(np.float64) * 2.0 - 1.0


def lanczos(
    matvec: MatVec,
    dim: int,
    steps: int,
    seed: int = 0,
    v0: np.ndarray | None = None,
    callback: Callable | None = None,
    dtype=np.float64,
):
    """Run up to ``steps`` Lanczos steps; returns ``(alpha, beta, Q)``.

    ``Q`` holds the orthonormal Lanczos vectors as rows, ``alpha`` the diagonal and ``beta`` the
    off-diagonal of the tridiagonal T = Qᵀ H Q; ``beta[-1]`` is the norm of the residual after
    the last step (zero when an invariant subspace was found early). Full
    re-orthogonalisation keeps Q orthonormal in floating point: one classical Gram–Schmidt
    pass, and a second only when the first removed most of the vector (the Daniel–Gragg–
    Kaufman–Stewart test: ‖w‖ fell below 1/√2 of its size; "twice is enough").
    ``callback(alpha, beta)`` after each step may return True to stop. ``dtype``: of the
    vectors (``float32`` halves the memory traffic of the re-orthogonalisation, which is
    memory-bound; use it when the matvec itself is float32). Q grows in blocks, so a run that
    stops after a few steps never touches memory for ``steps`` vectors.
    """
    steps = min(steps, dim)
    rng = np.random.default_rng(seed)
    q = rng.standard_normal(dim) if v0 is None else np.asarray(v0, np.float64).copy()
    q = (q / np.linalg.norm(q)).astype(dtype)
    Q = np.empty((min(steps, 16), dim), dtype)
    work = np.empty(dim, dtype)
    alpha, beta = [], []
    for j in range(steps):
        if j == len(Q):
            Q = np.concatenate([Q, np.empty((min(len(Q), steps - len(Q)), dim), dtype)])
        Q[j] = q
        w = np.asarray(matvec(q), dtype)
        a = float(q @ w)
        alpha.append(a)
        basis = Q[: j + 1]
        before = float(np.linalg.norm(w))
        for _ in range(2):
            np.dot(basis @ w, basis, out=work)
            w -= work
            if np.linalg.norm(w) >= 0.7071 * before:
                break
            before = float(np.linalg.norm(w))
        b = float(np.linalg.norm(w))
        beta.append(b)
        if callback is not None and callback(np.array(alpha), np.array(beta)):
            break
        if b <= 1e-10 * max(1.0, abs(a)):
            break
        q = np.divide(w, b, out=w)
    m = len(alpha)
    return np.array(alpha), np.array(beta), Q[:m]


def _tridiag(alpha, beta):
    m = len(alpha)
    T = np.diag(alpha)
    if m > 1:
        T += np.diag(beta[: m - 1], 1) + np.diag(beta[: m - 1], -1)
    return T


@dataclasses.dataclass
class EigenResult:
    """Top eigenvalues with Ritz residuals ‖Hy − θy‖, convergence flags and the cost."""

    eigenvalues: np.ndarray
    residuals: np.ndarray
    converged: np.ndarray
    matvecs: int
    eigenvectors: np.ndarray | None = None

    def to_dict(self) -> dict:
        return {
            "eigenvalues": self.eigenvalues.tolist(),
            "residuals": self.residuals.tolist(),
            "converged": self.converged.tolist(),
            "matvecs": self.matvecs,
        }


def top_eigenvalues(
    matvec: MatVec,
    dim: int,
    k: int = 1,
    tol: float = 1e-3,
    max_steps: int = 100,
    seed: int = 0,
    v0=None,
    return_vectors: bool = False,
    dtype=np.float64,
) -> EigenResult:
    """Largest ``k`` eigenvalues by Lanczos with full re-orthogonalisation.

    Stops once each of the top ``k`` Ritz pairs has residual ≤ ``tol``·|θ| (the eigenvalue
    error is then at most about residual²/gap, usually far below ``tol``), or after
    ``max_steps`` matrix-vector products; ``converged`` says which pairs met the bound.
    """
    k = min(k, dim)

    def converged_now(alpha, beta):
        if len(alpha) < k:
            return False
        theta, s = np.linalg.eigh(_tridiag(alpha, beta))
        top = np.argsort(theta)[::-1][:k]
        res = np.abs(beta[-1] * s[-1, top])
        return bool(np.all(res <= tol * np.maximum(np.abs(theta[top]), 1e-30)))

    alpha, beta, Q = lanczos(matvec, dim, max_steps, seed, v0, callback=converged_now, dtype=dtype)
    theta, s = np.linalg.eigh(_tridiag(alpha, beta))
    top = np.argsort(theta)[::-1][:k]
    residuals = np.abs(beta[-1] * s[-1, top])
    converged = residuals <= tol * np.maximum(np.abs(theta[top]), 1e-30)
    vectors = (Q.T @ s[:, top].astype(Q.dtype)).T.astype(np.float64) if return_vectors else None
    return EigenResult(theta[top], residuals, converged, len(alpha), vectors)


def power_iteration(
    matvec: MatVec, dim: int, k: int = 1, tol: float = 1e-3, max_iter: int = 200, seed: int = 0
) -> EigenResult:
    """Largest-magnitude ``k`` eigenvalues by power iteration with deflation.

    Each new vector is kept orthogonal to the eigenvectors already found; iteration stops when
    the residual ‖Hv − λv‖ ≤ ``tol``·|λ| (a change-only rule can stop early on slow decay).
    """
    rng = np.random.default_rng(seed)
    found, values, residuals, flags, matvecs = [], [], [], [], 0
    for _ in range(min(k, dim)):
        v = rng.standard_normal(dim)
        basis = np.array(found) if found else np.zeros((0, dim))
        lam, res, ok = 0.0, math.inf, False
        for _ in range(max_iter):
            v -= basis.T @ (basis @ v)
            v /= np.linalg.norm(v)
            w = np.asarray(matvec(v), np.float64)
            matvecs += 1
            w -= basis.T @ (basis @ w)
            lam = float(v @ w)
            res = float(np.linalg.norm(w - lam * v))
            if res <= tol * abs(lam):
                ok = True
                break
            v = w
        found.append(v)
        values.append(lam)
        residuals.append(res)
        flags.append(ok)
    return EigenResult(
        np.array(values), np.array(residuals), np.array(flags), matvecs, np.array(found)
    )


@dataclasses.dataclass
class Estimate:
    """A stochastic estimate with its standard error and cost in matrix-vector products."""

    value: float
    stderr: float
    matvecs: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def hutchinson_trace(matvec: MatVec, dim: int, num: int = 100, seed: int = 0) -> Estimate:
    """Tr H ≈ mean of zᵀHz over Rademacher z; stderr = sample std / √num."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(num):
        z = _rademacher(rng, dim)
        samples.append(float(z @ matvec(z)))
    samples = np.array(samples)
    stderr = float(samples.std(ddof=1) / math.sqrt(num)) if num > 1 else math.inf
    return Estimate(float(samples.mean()), stderr, num)


def hutchpp_trace(matvec: MatVec, dim: int, num: int = 99, seed: int = 0) -> Estimate:
    """Hutch++: exact trace on a sketched top subspace plus Hutchinson on the rest.

    ``num`` matrix-vector products are split in thirds: H S (sketch), H Q (projected trace),
    and Hutchinson on (I − QQᵀ) H (I − QQᵀ). The stderr is that of the Hutchinson part.
    """
    third = max(1, num // 3)
    rng = np.random.default_rng(seed)
    S = _rademacher(rng, dim, third)
    HS = np.array([matvec(s) for s in S])
    Q, _ = np.linalg.qr(HS.T)  # dim × third, orthonormal columns
    HQ = np.array([matvec(q) for q in Q.T])
    top = float(np.trace(Q.T @ HQ.T))
    G = _rademacher(rng, dim, third)
    G -= (G @ Q) @ Q.T
    samples = np.array([float(g @ matvec(g)) for g in G])
    # (I-QQᵀ) g is already projected; gᵀ(I-QQᵀ)H(I-QQᵀ)g needs the projection on one side only.
    stderr = float(samples.std(ddof=1) / math.sqrt(third)) if third > 1 else math.inf
    return Estimate(top + float(samples.mean()), stderr, 3 * third)


def hutchinson_frobenius(matvec: MatVec, dim: int, num: int = 50, seed: int = 0) -> Estimate:
    """‖H‖_F = √E‖Hz‖² for Rademacher z (E‖Hz‖² = Tr H² exactly); stderr by the delta method."""
    rng = np.random.default_rng(seed)
    samples = np.array(
        [float(np.sum(np.asarray(matvec(_rademacher(rng, dim))) ** 2)) for _ in range(num)]
    )
    value = math.sqrt(max(float(samples.mean()), 0.0))
    stderr_sq = float(samples.std(ddof=1) / math.sqrt(num)) if num > 1 else math.inf
    return Estimate(value, stderr_sq / (2 * value) if value > 0 else math.inf, num)


@dataclasses.dataclass
class SpectralDensity:
    """Gauss quadrature nodes (Ritz values) and weights of each SLQ run."""

    nodes: np.ndarray  # runs × steps
    weights: np.ndarray  # runs × steps, each row sums to 1
    matvecs: int

    def density(self, grid: np.ndarray, sigma: float | None = None) -> np.ndarray:
        """Density on ``grid``: the weighted nodes smoothed by a Gaussian of width ``sigma``."""
        if sigma is None:
            spread = float(self.nodes.max() - self.nodes.min()) or 1.0
            sigma = spread / (4 * self.nodes.shape[1])
        diff = grid[None, None, :] - self.nodes[:, :, None]
        kernel = np.exp(-0.5 * (diff / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
        return (self.weights[:, :, None] * kernel).sum(axis=1).mean(axis=0)

    def trace(self, dim: int) -> float:
        """Tr H ≈ dim × Σ weights × nodes (averaged over runs)."""
        return float(dim * np.mean(np.sum(self.weights * self.nodes, axis=1)))


def slq_density(
    matvec: MatVec, dim: int, runs: int = 10, steps: int = 80, seed: int = 0, after_run=None
) -> SpectralDensity:
    """Stochastic Lanczos quadrature: ``runs`` Lanczos runs of ``steps`` from random vectors;
    ``after_run(done, runs)`` is called after each (progress)."""
    rng = np.random.default_rng(seed)
    nodes, weights, matvecs = [], [], 0
    steps = min(steps, dim)
    for run in range(runs):
        if after_run is not None and run:
            after_run(run, runs)
        v0 = _rademacher(rng, dim)
        alpha, beta, _ = lanczos(matvec, dim, steps, v0=v0)
        matvecs += len(alpha)
        theta, s = np.linalg.eigh(_tridiag(alpha, beta))
        pad = steps - len(theta)  # an early invariant subspace: pad with zero weight
        nodes.append(np.pad(theta, (0, pad), constant_values=theta[-1]))
        weights.append(np.pad(s[0] ** 2, (0, pad)))
    return SpectralDensity(np.array(nodes), np.array(weights), matvecs)


def subspace_overlap(U: np.ndarray, V: np.ndarray) -> float:
    """‖U Vᵀ‖_F² / k for k orthonormal rows in U and V: 1 = same subspace, ~k/dim = random."""
    U = np.linalg.qr(np.atleast_2d(U).T)[0].T
    V = np.linalg.qr(np.atleast_2d(V).T)[0].T
    return float(np.sum((U @ V.T) ** 2) / min(len(U), len(V)))

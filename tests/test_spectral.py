"""Estimators against random symmetric matrices with known spectra (negative ones included)."""

import numpy as np
import pytest

from lrbs_tf.probes import spectral as sp


def matrix_with_spectrum(eigs, seed=0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((len(eigs), len(eigs))))
    return Q @ np.diag(eigs) @ Q.T, Q


SPECTRA = {
    "psd_decay": np.concatenate([[50.0, 20.0, 10.0], np.linspace(1, 0.01, 97)]),
    "indefinite": np.concatenate([[30.0, 12.0, -8.0], np.random.default_rng(1).normal(0, 1, 77)]),
    "negative_top_magnitude": np.concatenate([[5.0, 4.0], [-40.0], np.linspace(-1, 1, 47)]),
}


@pytest.mark.parametrize("name", sorted(SPECTRA))
def test_lanczos_top_eigenvalues(name):
    eigs = SPECTRA[name]
    A, _ = matrix_with_spectrum(eigs)
    res = sp.top_eigenvalues(lambda v: A @ v, len(eigs), k=2, tol=1e-8, max_steps=len(eigs))
    expected = np.sort(eigs)[::-1][:2]
    np.testing.assert_allclose(res.eigenvalues, expected, rtol=1e-8)
    assert res.converged.all() and np.all(res.residuals <= 1e-8 * np.abs(expected))


def test_lanczos_residuals_are_true_residuals():
    eigs = SPECTRA["psd_decay"]
    A, _ = matrix_with_spectrum(eigs)
    res = sp.top_eigenvalues(
        lambda v: A @ v, 100, k=3, tol=1e-12, max_steps=12, return_vectors=True
    )
    for theta, y, r in zip(res.eigenvalues, res.eigenvectors, res.residuals):
        assert np.linalg.norm(A @ y - theta * y) == pytest.approx(r, rel=1e-6, abs=1e-10)
    assert res.matvecs == 12


def test_lanczos_tolerance_is_honoured_and_cheap():
    eigs = SPECTRA["psd_decay"]
    A, _ = matrix_with_spectrum(eigs)
    res = sp.top_eigenvalues(lambda v: A @ v, 100, k=1, tol=1e-3, max_steps=100)
    assert res.converged[0] and res.matvecs < 30
    assert abs(res.eigenvalues[0] - 50) / 50 < 1e-3


def test_lanczos_keeps_basis_orthonormal():
    A, _ = matrix_with_spectrum(SPECTRA["indefinite"])
    _, _, Q = sp.lanczos(lambda v: A @ v, 80, 60)
    np.testing.assert_allclose(Q @ Q.T, np.eye(len(Q)), atol=1e-10)


@pytest.mark.parametrize("name", sorted(SPECTRA))
def test_power_iteration_largest_magnitude(name):
    eigs = SPECTRA[name]
    A, _ = matrix_with_spectrum(eigs)
    res = sp.power_iteration(lambda v: A @ v, len(eigs), k=2, tol=1e-6, max_iter=2000)
    expected = eigs[np.argsort(-np.abs(eigs))][:2]
    np.testing.assert_allclose(res.eigenvalues, expected, rtol=1e-5)
    assert res.converged.all()


@pytest.mark.parametrize("name", sorted(SPECTRA))
def test_trace_estimators_within_their_error(name):
    eigs = SPECTRA[name]
    A, _ = matrix_with_spectrum(eigs)
    f = lambda v: A @ v  # noqa: E731
    for est in (
        sp.hutchinson_trace(f, len(eigs), num=400, seed=3),
        sp.hutchpp_trace(f, len(eigs), num=60, seed=3),
    ):
        assert abs(est.value - eigs.sum()) < 4 * est.stderr + 1e-9, (est, eigs.sum())


def test_hutchpp_exact_when_sketch_spans_space():
    eigs = np.linspace(-3, 7, 20)
    A, _ = matrix_with_spectrum(eigs)
    est = sp.hutchpp_trace(lambda v: A @ v, 20, num=66)
    assert est.value == pytest.approx(eigs.sum(), abs=1e-9)


def test_hutchpp_beats_hutchinson_on_decaying_spectrum():
    eigs = SPECTRA["psd_decay"]
    A, _ = matrix_with_spectrum(eigs)
    f = lambda v: A @ v  # noqa: E731
    assert sp.hutchpp_trace(f, 100, num=60).stderr < sp.hutchinson_trace(f, 100, num=60).stderr


def test_frobenius():
    eigs = SPECTRA["indefinite"]
    A, _ = matrix_with_spectrum(eigs)
    est = sp.hutchinson_frobenius(lambda v: A @ v, len(eigs), num=400, seed=1)
    assert abs(est.value - np.sqrt(np.sum(eigs**2))) < 4 * est.stderr


def test_slq_density_moments():
    eigs = SPECTRA["indefinite"]
    A, _ = matrix_with_spectrum(eigs)
    dens = sp.slq_density(lambda v: A @ v, 80, runs=30, steps=40, seed=2)
    assert dens.weights.sum(axis=1) == pytest.approx(np.ones(30))
    # Each run's quadrature is exact for low-degree polynomials of the run's vector.
    assert dens.trace(80) == pytest.approx(eigs.sum(), abs=4 * np.sqrt(2 * np.sum(eigs**2) / 30))
    grid = np.linspace(-15, 40, 2000)
    d = dens.density(grid)
    assert np.trapezoid(d, grid) == pytest.approx(1.0, abs=1e-3)
    assert dens.nodes.max() == pytest.approx(30.0, rel=1e-6)


def test_subspace_overlap():
    _, Q = matrix_with_spectrum(np.arange(10.0))
    assert sp.subspace_overlap(Q[:, :3].T, Q[:, :3].T) == pytest.approx(1.0)
    assert sp.subspace_overlap(Q[:, :3].T, Q[:, 3:6].T) == pytest.approx(0.0, abs=1e-12)

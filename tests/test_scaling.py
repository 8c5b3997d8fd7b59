"""The scaling test (lrbs_tf.scaling, lrbs-scale) against what is known independently: a
least-squares model in Keras whose stability limit is the closed form k·η0·λ_max = 2, the data
order checked batch by batch, η/S read back from TensorBoard, the floor's coverage by
simulation, SVAG's mean and covariance against the least-squares closed form, bad input, a
killed test resumed."""

import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from lrbs_tf.scaling import stream
from lrbs_tf.scaling.plan import rescaled, resolve
from lrbs_tf.scaling.settings import ScaleSettings
from lrbs_tf.scaling.verdict import edge_batch, judge, noise_floor
from lrbs_tf.theory import sde
from lrbs_tf.theory.sde import LeastSquares

N, D, S0, K_EDGE = 2048, 20, 4, 12  # K_EDGE: the k at which k·η0·λ_max = 2


def half_squared(y, outputs):
    """Per-example ½(xᵀθ − y)²; rank-robust (Keras' compile gives y as (B, 1))."""
    y = tf.reshape(tf.cast(y, outputs.dtype), [-1])
    return 0.5 * tf.square(tf.reshape(outputs, [-1]) - y)


def least_squares(n=N, d=D, seed=0):
    """A LeastSquares problem (one top direction, the rest spread below) and a Keras Dense(1)
    model at its minimum θ*."""
    from lrbs_tf.core.optimizers import as_ratio_model

    spectrum = np.concatenate([[1.0], np.linspace(0.05, 0.3, d - 1)])
    problem = LeastSquares.random(n, d, noise=1.0, seed=seed, spectrum=spectrum)
    inputs = keras.Input((d,))
    model = as_ratio_model(keras.Model(inputs, keras.layers.Dense(1, use_bias=False)(inputs)))
    model.layers[-1].kernel.assign(problem.minimum[:, None].astype("float32"))
    return problem, model


def run_least_squares(path, settings, lr0, problem, model, say=lambda line: None):
    from lrbs_tf.scaling.experiment import run_test

    plan = resolve(settings, problem.n, f"{lr0!r}/{S0}")
    x, y = problem.X.astype("float32"), problem.y.astype("float32")
    identity = {"test": "least squares", "lr0": lr0}
    return run_test(model, x, y, plan, settings, str(path), identity, say=say, loss=half_squared)


@pytest.fixture(scope="module")
def linear_test(tmp_path_factory):
    """The linear rule on least squares from θ*, factors 1…32, η0 = 2/(12·λ_max)."""
    problem, model = least_squares()
    lam = float(np.linalg.eigvalsh(problem.hessian).max())
    lr0 = 2 / (K_EDGE * lam)
    settings = ScaleSettings(
        factors="1,2,4,8,16,32",
        rules="linear",
        points=4,
        svag="none",
        probe=False,
        eval_examples=N,
        bn_examples=16,
    )
    path = tmp_path_factory.mktemp("scale") / "ls"
    return run_least_squares(path, settings, lr0, problem, model), lr0, lam, path


def test_linear_k_star_is_within_a_factor_2_of_the_closed_form_stability_limit(linear_test):
    report, lr0, lam, _ = linear_test
    result = report["rules"]["linear"]
    k_edge = 2 / (lr0 * lam)  # where k·η0·λ_max = 2 (lrbs_tf.theory.sde: no stationary state)
    assert k_edge / 2 <= result["k_star"] <= 2 * k_edge, result["k_star"]
    problem, unstable = least_squares()[0], []
    for row in result["rows"]:
        try:  # the exact discrete-time stationary loss of SGD on this quadratic (C = H)
            sde.expected_loss_discrete(problem.hessian, None, row["lr"], row["batch"])
        except ValueError:  # η·λ_max ≥ 2: no stationary state, the top direction grows
            assert not row["keeps"] and row["way"] in ("unstable", "diverged"), row
            unstable.append(row["k"])
    assert unstable == [16, 32]


def test_every_branch_keeps_its_eta_over_s_exactly_in_tensorboard(linear_test):
    from lrbs_tf.training.tensorboard import read_scalars

    report, lr0, _, path = linear_test
    for row in report["base"][1:] + report["rules"]["linear"]["rows"]:  # each branch once
        scalars = read_scalars(os.path.join(path, "tb", row["name"]))
        ratios = np.array([v for _, v in scalars["step/ratio"]])
        assert len(ratios) == row["steps"] or row["way"] == "diverged"
        assert np.all(ratios == np.float32(lr0 / S0)), row["name"]  # linear: η/S of the base
        assert np.all(np.array([v for _, v in scalars["step/lr"]]) == np.float32(row["lr"]))
        assert {v for _, v in scalars["step/batch_size"]} == {row["batch"]}
        assert row["lr"] == pytest.approx(row["k"] * lr0)
    assert any(f.startswith("events.") for f in os.listdir(path / "tb" / "hparams"))


def test_adam_branches_follow_the_sde_square_root_rule(tmp_path):
    from lrbs_tf.training.tensorboard import read_scalars

    problem, model = least_squares(512, 4, seed=6)
    settings = ScaleSettings(
        factors="1,2,4",
        optimizer="adam",
        rules="sde",
        points=2,
        probe=False,
        eval_examples=512,
        bn_examples=16,
    )
    report = run_least_squares(tmp_path / "adam", settings, 0.01, problem, model)
    assert report["svag"]["rows"] == []  # SVAG is for plain SGD: off by default here
    for row in report["rules"]["sde"]["rows"][1:]:
        k = row["k"]
        assert row["optimizer"]["beta_1"] == pytest.approx(1 - k * 0.1)
        assert row["optimizer"]["beta_2"] == pytest.approx(1 - k * 0.001)
        assert row["optimizer"]["epsilon"] == pytest.approx(1e-7 / math.sqrt(k))
        scalars = read_scalars(str(tmp_path / "adam" / "tb" / row["name"]))
        np.testing.assert_allclose([v for _, v in scalars["step/lr"]], 0.01 * math.sqrt(k), 1e-6)


def test_the_verdict_never_calls_a_branch_outside_the_floor_equivalent(linear_test):
    report = linear_test[0]
    low, high = report["floor"]["low"][-1], report["floor"]["high"][-1]
    rows = report["base"] + report["rules"]["linear"]["rows"]
    for row in rows:
        inside = math.isfinite(row["loss_after"]) and low <= row["loss_after"] <= high
        assert row["keeps"] == inside, row
    rng = np.random.default_rng(0)
    for _ in range(300):  # judge() against the definition, on random floors and branches
        floor = noise_floor(rng.normal(1, 0.1, (3, 4)))
        losses = rng.normal(1, 0.3, 4)
        losses[rng.integers(4)] = rng.choice([losses[0], np.inf, np.nan])
        out = judge(losses, floor, 2.0)
        last = losses[-1]
        assert out["keeps"] == bool(
            np.isfinite(last) and floor["low"][-1] <= last <= floor["high"][-1]
        )
        assert out["keeps"] or out["way"] is not None


def test_the_floor_covers_one_more_base_run_at_its_level():
    rng = np.random.default_rng(1)
    draws = rng.normal(3.0, 0.2, (4, 40000))  # 40000 independent tests, each of 3 + 1 runs
    floor = noise_floor(draws[:3], level=0.95)
    inside = (floor["low"] <= draws[3]) & (draws[3] <= floor["high"])
    assert inside.mean() == pytest.approx(0.95, abs=0.006)


def test_a_batch_of_k_s0_is_the_union_of_k_consecutive_batches_of_s0():
    from lrbs_tf.data.pipeline import EpochData

    x = np.arange(1000, dtype="float32")[:, None] * np.ones((1, 3), "float32")
    data = EpochData(x, np.arange(1000), seed=7)
    block = 8 * 10  # factors up to 8 with S0 = 10: 12 blocks, 40 examples left out per epoch
    small = [y.numpy() for _, y in stream.batches(data, 10, block, 0, 2 * 96)]
    assert len(small) == 192 and len(np.unique(np.concatenate(small[:96]))) == 960
    for k in (2, 4, 8):
        big = [y.numpy() for _, y in stream.batches(data, 10 * k, block, 0, 2 * 96 // k)]
        for j, batch in enumerate(big):  # epoch 1 included: no batch crosses an epoch
            np.testing.assert_array_equal(batch, np.concatenate(small[j * k : (j + 1) * k]))
    later = [y.numpy() for _, y in stream.batches(data, 40, block, 23, 2)]
    np.testing.assert_array_equal(later[0], np.concatenate(small[92:96]))
    np.testing.assert_array_equal(later[1], np.concatenate(small[96:100]))  # epoch 1 begins
    (pair,) = [y.numpy() for _, y in stream.pairs(data, 10, block, 5, 1)]
    np.testing.assert_array_equal(pair, np.stack(small[10:12]))


def test_svag_keeps_the_mean_gradient_and_multiplies_the_noise_covariance_by_ell():
    from lrbs_tf.data.pipeline import EpochData
    from lrbs_tf.scaling.svag import SvagModel, svag_weights

    n, d, s = 2048, 3, 8
    problem, model = least_squares(n, d, seed=3)
    theta = problem.minimum + np.array([0.5, -0.3, 0.2])  # away from θ*: g ≠ 0
    model.layers[-1].kernel.assign(theta[:, None].astype("float32"))
    X, y = problem.X, problem.y
    per_example = X * (X @ theta - y)[:, None]  # closed-form per-example gradients
    g, sigma = per_example.mean(axis=0), np.cov(per_example.T, bias=True)
    svag = SvagModel(model, half_squared)
    data = EpochData(X.astype("float32"), y.astype("float32"), seed=0)
    pairs = [(xb.numpy(), yb.numpy()) for xb, yb in stream.pairs(data, s, s, 0, 15 * n // 16)]
    xs = np.stack([p[0] for p in pairs]).astype(float)  # 15 epochs of pairs, in stream order
    ys = np.stack([p[1] for p in pairs]).astype(float)
    batch_grads = np.einsum("pbsd,pbs->pbd", xs, np.einsum("pbsd,d->pbs", xs, theta) - ys) / s
    for ell in (1, 2, 4):
        a1, a2 = svag_weights(ell)
        assert a1 + a2 == pytest.approx(1) and a1**2 + a2**2 == pytest.approx(ell)
        svag.coefficients.assign([a1, a2])
        grads, _ = svag.gradient(xs[3, 0], ys[3, 0], xs[3, 1], ys[3, 1], training=False)
        closed = a1 * batch_grads[3, 0] + a2 * batch_grads[3, 1]
        np.testing.assert_allclose(grads[0].numpy()[:, 0], closed, rtol=2e-4, atol=1e-5)
        samples = a1 * batch_grads[:, 0] + a2 * batch_grads[:, 1]
        # two disjoint batches of one permutation: Cov = ℓ·Σ/S·(N−S)/(N−1) − 2a1a2·Σ/(N−1)
        expected = ell * sigma / s * (n - s) / (n - 1) - 2 * a1 * a2 * sigma / (n - 1)
        se = np.sqrt(np.diag(expected) / len(samples))
        assert np.all(np.abs(samples.mean(axis=0) - g) < 4 * se)
        assert np.trace(np.cov(samples.T)) == pytest.approx(np.trace(expected), rel=0.1)


def test_a_svag_step_is_a_step_of_eta_over_ell_on_the_weighted_batches(tmp_path):
    from lrbs_tf.data.pipeline import EpochData
    from lrbs_tf.scaling.svag import SvagModel, svag_weights

    problem, model = least_squares(256, 3, seed=4)
    theta = model.layers[-1].kernel.numpy()[:, 0].astype(float)
    svag = SvagModel(model, half_squared)
    svag.compile_svag()
    svag.set_step(4, 0.3 / 4, 8)
    data = EpochData(problem.X.astype("float32"), problem.y.astype("float32"), seed=1)
    pairs = stream.pairs(data, 8, 8, 0, 1)
    svag.fit(pairs, verbose=0)
    ((xs, ys),) = pairs
    a = svag_weights(4)
    xs, ys = xs.numpy().astype(float), ys.numpy().astype(float)
    grad = sum(w * xi.T @ (xi @ theta - yi) / 8 for w, xi, yi in zip(a, xs, ys))
    np.testing.assert_allclose(
        model.layers[-1].kernel.numpy()[:, 0], theta - 0.3 / 4 * grad, rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(
    "rule, k, lr, betas",
    [
        ("linear", 8, 0.8, None),
        ("sqrt", 4, 0.2, None),
        ("none", 16, 0.1, None),
        ("sde", 4, 0.2, (0.6, 0.996, 5e-8)),  # 1 − β' = 4(1 − β), ε/√4
        ("sde", 16, None, None),  # 16·(1 − 0.9) ≥ 1: no β1
    ],
)
def test_rescaling_rules(rule, k, lr, betas):
    adam = {"name": "adam", "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}
    out, why = rescaled(rule, k, 0.1, adam)
    if lr is None:
        assert out is None and "1 − β1" in why
        return
    assert out["lr"] == pytest.approx(lr)
    if betas:
        assert (out["beta_1"], out["beta_2"], out["epsilon"]) == pytest.approx(betas)


def test_the_edge_is_interpolated_where_eta_lambda_crosses_the_line():
    # η·λ_step = 0.5·k^0.8: reaches 3.7 at k = 7.4^(1/0.8), S = S0·k
    products = [(k, 0.5 * k**0.8) for k in (1, 2, 4, 8, 16, 32)]
    assert edge_batch(products, 50, 3.7) == pytest.approx(50 * 7.4 ** (1 / 0.8))
    assert edge_batch(products, 50, 100.0) is None


def test_the_plan_rounds_examples_to_blocks_and_spaces_the_points():
    plan = resolve(ScaleSettings(factors="1,2,4,8,16,32"), 50000, "0.1/50")
    assert plan.block == 1600 and plan.examples == 49600 and len(plan.points) == 8
    assert all(p % plan.block == 0 for p in plan.points) and plan.points[-1] == plan.examples
    names = [b.name for b in plan.branches]
    assert names[:3] == ["base-order0", "base-order1", "base-order2"]
    assert names[-2:] == ["svag-l2", "svag-l4"]
    assert plan.branch("linear-k32").steps == 31 and plan.branch("svag-l4").steps == 4 * 992
    default = resolve(ScaleSettings(), 50000, "0.1/50")  # S ≤ N/10 = 5000
    assert default.factors == (1, 2, 4, 8, 16, 32, 64)


# -- bad input: one line, exit status 2, nothing written ------------------------------------


@pytest.fixture()
def tiny_data(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 255, (1100, 8, 8, 1), dtype=np.uint8),
        y_train=rng.integers(0, 3, 1100),
    )
    return str(path)


def fake_run(tmp_path, status, epochs):
    """A run folder as lrbs-run leaves it (the files the scaling test reads first)."""
    run = tmp_path / f"run-{status}"
    run.mkdir()
    config = {
        "lr": 0.1,
        "batch_size": 10,
        "model": "mlp",
        "dataset": "fashion_mnist",
        "num_train": 990,
        "momentum": 0.0,
        "seed": 0,
    }
    (run / "config.json").write_text(json.dumps({"config": config}))
    (run / "results.json").write_text(
        json.dumps(
            {"status": status, "epochs": [{"epoch": e + 1, "steps": 1} for e in range(epochs)]}
        )
    )
    if status == "finished":
        (run / "model.keras").write_bytes(b"not read before the checks")
    return str(run)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--factors", "1,4,2"], "--factors must increase"),
        (["--factors", "1,2,200"], "more than the N = 891"),  # 1100 − 10 % test − 10 % val
        (["--examples", "30", "--factors", "1,2,4"], "smaller than the largest batch S = 40"),
        (["--from", "RUN-finished", "--epoch", "3"], "no checkpoint at epoch 3"),
        (["--from", "RUN-interrupted"], "has no checkpoint to branch from"),
        (["--from", "nowhere"], "no such folder"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_anything_is_written(
    tmp_path, tiny_data, capsys, flags, message
):
    from lrbs_tf.cli.scale import main

    flags = [
        fake_run(tmp_path, f.split("-", 1)[1], 1) if f.startswith("RUN-") else f for f in flags
    ]
    logdir = tmp_path / "out"
    argv = ["--dataset", tiny_data, "--base", "0.1/10", "--logdir", str(logdir)]
    argv += [] if "--from" in flags else ["--from", "init"]
    with pytest.raises(SystemExit) as stop:
        main(argv + flags)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and message in err, err
    assert not logdir.exists()


# -- resuming, and folders that are not ours ------------------------------------------------


def test_a_killed_test_resumes_reusing_finished_branches(tmp_path):
    settings = ScaleSettings(
        factors="1,2,4",
        rules="linear",
        points=2,
        svag="2",
        probe=False,
        eval_examples=256,
        bn_examples=16,
    )
    problem, model = least_squares(256, 4, seed=5)
    lr0 = 0.05

    def kill_at_branch_5(line):
        if line.startswith("[5/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_least_squares(tmp_path / "t", settings, lr0, problem, model, kill_at_branch_5)
    branches = tmp_path / "t" / "branches"
    before = {p.name: p.read_bytes() for p in branches.iterdir()}
    assert sorted(before) == [
        "base-order0.json",
        "base-order1.json",
        "base-order2.json",
        "linear-k2.json",
    ]
    half = tmp_path / "t" / "tb" / "linear-k4"
    half.mkdir()
    (half / "events.out.tfevents.0.killed").write_bytes(b"half written")
    said = []
    problem, model = least_squares(256, 4, seed=5)  # θ0 again, as a new process loads it
    resumed = run_least_squares(tmp_path / "t", settings, lr0, problem, model, said.append)
    assert [line.split()[0] for line in said if line.startswith("[")] == ["[5/6]", "[6/6]"]
    assert {p.name: p.read_bytes() for p in branches.iterdir() if p.name in before} == before
    assert not (half / "events.out.tfevents.0.killed").exists()
    problem, model = least_squares(256, 4, seed=5)
    whole = run_least_squares(tmp_path / "w", settings, lr0, problem, model)
    assert table(resumed)[0] == table(whole)[0]
    np.testing.assert_allclose(table(resumed)[1], table(whole)[1], rtol=1e-5)


def table(report):
    rows = report["base"] + report["rules"]["linear"]["rows"] + report["svag"]["rows"]
    return [(r["name"], r["steps"], r["keeps"]) for r in rows], [r["losses"] for r in rows]


def test_a_folder_that_is_not_ours_or_holds_another_test_is_refused(tmp_path):
    from lrbs_tf.scaling.folder import ScaleFolderError, TestFolder

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(ScaleFolderError, match="not a scaling-test folder"):
            TestFolder.claim(str(theirs), {"a": 1}, overwrite=overwrite)
    assert (theirs / "notes.txt").read_text() == "mine"
    with TestFolder.claim(str(tmp_path / "ours"), {"a": 1}):
        pass
    (tmp_path / "ours" / "notes.txt").write_text("mine too")
    with pytest.raises(ScaleFolderError, match="other settings"):
        TestFolder.claim(str(tmp_path / "ours"), {"a": 2})
    with TestFolder.claim(str(tmp_path / "ours"), {"a": 2}, overwrite=True) as folder:
        assert folder.saved["identity"] == {"a": 2}
    assert (tmp_path / "ours" / "notes.txt").read_text() == "mine too"


def test_the_advisor_quotes_a_finished_scaling_test_of_the_run(linear_test, tmp_path, capsys):
    from lrbs_tf.cli.advise import main

    report, _, _, path = linear_test
    run = tmp_path / "runs" / "my-run"
    run.mkdir(parents=True)
    config = {"lr": 0.1, "batch_size": S0, "num_train": N, "model": "mlp"}
    (run / "config.json").write_text(json.dumps({"config": config}))
    results = {"status": "finished", "epochs": [{"epoch": 1, "steps": 1}]}
    (run / "results.json").write_text(json.dumps(results))
    test = tmp_path / "runs" / "scaling" / "scale-my-run"
    test.mkdir(parents=True)
    (test / ".lrbs-scale").write_text("{}")
    start = {"kind": "run", "spec": str(run), "epoch": 1}
    (test / "scale.json").write_text(json.dumps({"identity": {"start": start}}))
    (test / "scaling.json").write_bytes((path / "scaling.json").read_bytes())
    # the run has no probe of its own: the test's probe of its final weights stands in
    probe = {"step_sharpness_by_batch": {str(S0): 3.0}, "b_simple": 40.0}
    (test / "probe.json").write_text(json.dumps(probe))
    row = next(r for r in report["rules"]["linear"]["rows"] if r["k"] == 2)
    assert main([str(run), "--batch-size", str(row["batch"]), "--json"]) == 0
    advice = json.loads(capsys.readouterr().out)
    assert advice["base"]["step_sharpness"] == 3.0 and "scale-my-run" in advice["probe_source"]
    (quoted,) = advice["scaling_tests"]
    line = quoted["lines"][0]
    assert line.startswith(f"linear: k* = {report['rules']['linear']['k_star']}")
    assert f"{row['loss_after']:.4g}" in line and "inside the floor" in line
    assert main([str(run), "--batch-size", "1000"]) == 0
    assert "S = 1000 was not tried" in capsys.readouterr().out


def test_a_run_kept_every_epoch_branches_from_the_epoch_asked(tmp_path, tiny_data):
    """--keep-epochs 1: the snapshot after epoch 1 of a 2-epoch run is the final model of the
    same run stopped after 1 epoch (op determinism: bitwise), and it is θ0 of --epoch 1."""
    from lrbs_tf.models.registry import load_model
    from lrbs_tf.scaling.start import describe_start, load_start
    from lrbs_tf.settings import ConfigError
    from lrbs_tf.training.config import RunConfig
    from lrbs_tf.training.run import train

    settings = dict(
        lr=0.1,
        batch_size=50,
        width=8,
        dataset=tiny_data,
        deterministic=True,
        logdir=str(tmp_path / "runs"),
    )
    two = RunConfig(epochs=2, keep_epochs=1, name="two", **settings).validate()
    one = RunConfig(epochs=1, name="one", **settings).validate()
    for config in (two, one):
        assert train(config, progress="none")["status"] == "finished"
    assert sorted(os.listdir(os.path.join(two.run_dir, "snapshots"))) == [
        "epoch-0001.keras",
        "epoch-0002.keras",
    ]
    start = describe_start(two.run_dir, 1, None, {}, str(tmp_path))
    theta0, data = load_start(start)
    after_one = load_model(os.path.join(one.run_dir, "model.keras"), compile=False)
    for a, b in zip(theta0.weights, after_one.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert len(data.train) == two.num_train and start.label.endswith("at epoch 1")
    with pytest.raises(ConfigError, match="no checkpoint at epoch 3 .*keeps epoch.s. 1, 2"):
        describe_start(two.run_dir, 3, None, {}, str(tmp_path))
    results = json.loads(open(os.path.join(two.run_dir, "results.json")).read())
    results["status"] = "interrupted"  # a stopped run branches from what it kept
    open(os.path.join(two.run_dir, "results.json"), "w").write(json.dumps(results))
    os.remove(os.path.join(two.run_dir, "model.keras"))
    assert describe_start(two.run_dir, None, None, {}, str(tmp_path)).epoch == 2

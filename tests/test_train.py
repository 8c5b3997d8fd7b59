"""Short real training runs on a Fashion-MNIST subset: run folder, TensorBoard, divergence,
seeds."""

import json
import os

import numpy as np
import pytest

from lrbs_tf.training.config import RunConfig
from lrbs_tf.training.run import RunExistsError, train
from lrbs_tf.training.tensorboard import read_scalars
from tests.helpers import needs_fmnist, run_script

pytestmark = needs_fmnist


def small(tmp_path, **overrides):
    settings = dict(
        lr=0.05,
        batch_size=64,
        epochs=2,
        train_size=1000,
        validation_size=500,
        width=32,
        logdir=str(tmp_path),
        eval_batch_size=500,
        jit_compile="off",
    )
    settings.update(overrides)
    return RunConfig(**settings)


def test_run_folder_results_and_tensorboard(tmp_path):
    import keras

    config = small(tmp_path)
    keras_board = keras.callbacks.TensorBoard(str(tmp_path / "keras"))  # a user's own
    results = train(config, callbacks=[keras_board])
    run_dir = config.run_dir
    saved = json.load(open(os.path.join(run_dir, "results.json")))
    assert saved["status"] == "finished" and not saved["diverged"]
    assert [e["epoch"] for e in saved["epochs"]] == [1, 2]
    for record in saved["epochs"]:
        assert record["steps"] == 16  # 15 × 64 + 40
        for key in (
            "train_loss",
            "train_accuracy",
            "validation_loss",
            "validation_accuracy",
            "test_loss",
            "test_accuracy",
        ):
            assert np.isfinite(record[key]), key
    assert saved["final_test_accuracy"] == results["final_test_accuracy"] > 0.5
    assert saved["examples_per_second"] > 0 and saved["wall_time"] > 0
    cfg = json.load(open(os.path.join(run_dir, "config.json")))
    assert cfg["config"]["lr"] == 0.05 and cfg["config"]["batch_size"] == 64
    assert cfg["config"]["ratio"] == pytest.approx(0.05 / 64)
    assert cfg["data"]["train_size"] == 1000 and cfg["data"]["validation_size"] == 500
    assert cfg["versions"]["tensorflow"] and cfg["versions"]["keras"].startswith("3.")
    assert cfg["deterministic"] is False
    assert os.path.exists(os.path.join(run_dir, "model.keras"))

    steps = read_scalars(os.path.join(run_dir, "tb", "train"))
    sizes = [v for _, v in steps["step/batch_size"]]
    assert [s for s, _ in steps["step/batch_size"]] == list(range(1, 33))
    assert sizes == ([64.0] * 15 + [40.0]) * 2
    lrs = np.array([v for _, v in steps["step/lr"]])
    np.testing.assert_allclose(lrs, np.float32(0.05 / 64) * np.array(sizes, np.float32), rtol=1e-6)
    np.testing.assert_allclose([v for _, v in steps["step/ratio_x1e6"]], 0.05 / 64 * 1e6, rtol=1e-5)
    losses = [v for _, v in steps["step/loss"]]
    assert all(np.isfinite(losses)) and np.mean(losses[-8:]) < np.mean(losses[:8])
    # The mean of the batch losses weighted by size is Keras' epoch loss.
    first = np.dot(losses[:16], sizes[:16]) / 1000
    assert first == pytest.approx(saved["epochs"][0]["train_loss"], rel=1e-4)
    # epochs on the x-axis Keras' TensorBoard callback draws them on (its epoch index)
    keras_steps = [s for s, _ in read_scalars(str(tmp_path / "keras" / "train"))["epoch_loss"]]
    for split in ("train", "validation", "test"):
        epochs = read_scalars(os.path.join(run_dir, "tb", split))
        assert [s for s, _ in epochs["epoch_accuracy"]] == keras_steps == [0, 1]
    test_acc = [v for _, v in read_scalars(os.path.join(run_dir, "tb", "test"))["epoch_accuracy"]]
    assert test_acc[-1] == pytest.approx(saved["final_test_accuracy"])


def test_existing_run_folder(tmp_path):
    config = small(tmp_path, epochs=1)
    first = train(config)
    again = train(config)  # the same command: the finished run is returned, not redone
    assert again == json.load(open(os.path.join(config.run_dir, "results.json")))
    assert (
        again["weights_sha1"] == first["weights_sha1"] and again["wall_time"] == first["wall_time"]
    )
    other = small(tmp_path, epochs=2, name=os.path.basename(config.run_dir))
    with pytest.raises(RunExistsError, match="--overwrite"):
        train(other)
    other.overwrite = True
    assert len(train(other)["epochs"]) == 2


def test_same_seed_same_numbers(tmp_path):
    a = train(small(tmp_path, name="a", seed=7))
    b = train(small(tmp_path, name="b", seed=7))
    c = train(small(tmp_path, name="c", seed=8))
    assert a["weights_sha1"] == b["weights_sha1"] != c["weights_sha1"]
    strip = lambda r: [{k: v for k, v in e.items() if k != "wall_time"} for e in r["epochs"]]  # noqa: E731
    assert strip(a) == strip(b)


@pytest.mark.slow  # test_sweeps' Fig. 3 grid has a diverging run through the command too
def test_divergence_via_cli(tmp_path):
    proc = run_script(
        "experiments/run.py",
        "--ratio",
        "1e6/64",
        "--train-size",
        "1000",
        "--validation-size",
        "500",
        "--epochs",
        "3",
        "--width",
        "16",
        "--logdir",
        tmp_path,
        "--name",
        "huge",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "diverged" in proc.stdout
    results = json.load(open(tmp_path / "huge" / "results.json"))
    assert results["status"] == "diverged" and results["diverged"] is True
    assert results["diverged_epoch"] == 1 and len(results["epochs"]) == 1


def test_probe_at_end_and_every_epoch(tmp_path):
    from lrbs_tf.training.config import ProbeSettings

    settings = ProbeSettings(
        examples=300,
        noise_examples=100,
        batch_size=128,
        trace_matvecs=9,
        frobenius_samples=4,
        lanczos_max_steps=20,
    )
    config = small(tmp_path, epochs=2, probe=settings, probe_every=1)
    results = train(config)
    probe = json.load(open(os.path.join(config.run_dir, "results.json")))["probe"]
    for key in (
        "lambda_max",
        "trace",
        "frobenius",
        "frobenius_fd",
        "b_simple",
        "trace_c",
        "grad_norm_sq",
        "stability_2_over_lr",
    ):
        assert np.isfinite(probe[key]), key
    assert probe["lambda_max"] > 0 and probe["trace"] > 0
    assert probe["stability_2_over_lr"] == pytest.approx(2 / 0.05)
    assert probe["settings"]["num_examples"] == 300 and probe["settings"]["bn_mode"] == "inference"
    assert probe["settings"]["noise_examples"] == 100 and probe["settings"]["subset_fingerprint"]
    assert [h["epoch"] for h in results["probe_history"]] == [1, 2]
    assert probe["width_sharpness"] == probe["lambda_max"] and probe["step_sharpness"] > 0
    assert probe["settings"]["step_batch_size"] == 64
    scalars = read_scalars(os.path.join(config.run_dir, "tb", "probe"))
    scalars |= read_scalars(os.path.join(config.run_dir, "tb", "probe_2_over_lr"))
    # One point per epoch (at Keras' epoch index): the streaming probe of the last epoch, not
    # a second one at the end.
    for tag in ("probe/width_sharpness", "probe/step_sharpness", "probe/stability_2_over_lr"):
        assert [s for s, _ in scalars[tag]] == [0, 1], tag
    assert scalars["probe/width_sharpness"][-1][1] == pytest.approx(
        results["probe_history"][-1]["width_sharpness"], rel=1e-6
    )
    assert scalars["probe/stability_2_over_lr"][0][1] == pytest.approx(40.0)
    assert "probe/b_simple" in scalars and "probe/trace" in scalars

    # tools/probe.py measures the saved model again, with the same subset and settings.
    proc = run_script(
        "tools/probe.py",
        config.run_dir,
        "--examples",
        "300",
        "--noise-examples",
        "100",
        "--batch-size",
        "128",
        "--no-finite-difference",
        "--density",
        "--compare-c",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = json.load(open(os.path.join(config.run_dir, "probe.json")))
    assert os.path.getsize(os.path.join(config.run_dir, "spectral_density.png")) > 5000
    assert again["spectral_density"]["trace_estimate"] > 0
    assert 0 < again["c_vs_h"]["top_k_overlap"] <= 1 and again["c_vs_h"]["trace_c_over_trace_h"] > 0
    assert again["lambda_max"] == pytest.approx(probe["lambda_max"], rel=1e-3)
    assert again["b_simple"] == pytest.approx(probe["b_simple"], rel=1e-4)
    assert "step" in proc.stdout and "width" in proc.stdout
    assert again["step_sharpness"] == pytest.approx(probe["step_sharpness"], rel=1e-3)

    # The advisor reads the same run folder.
    proc = run_script(
        "tools/advise.py", config.run_dir, "--batch-size", "256", "--json", timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    advice = json.loads(proc.stdout)
    assert advice["rules"]["linear"]["lr"] == pytest.approx(0.05 * 4)
    assert advice["rules"]["linear"]["lr_times_step_sharpness"] == pytest.approx(
        0.2 * probe["step_sharpness"]
    )
    assert advice["checks"]["batch_over_b_simple"] == pytest.approx(256 / probe["b_simple"])
    assert advice["steps_per_epoch"] == {"before": 16, "after": 4}
    text = run_script("tools/advise.py", config.run_dir, "--batch-size", "256", timeout=60)
    assert text.returncode == 0 and "verdict" in text.stdout


def test_a_time_shared_final_probe_records_its_limit_and_passes(tmp_path):
    """run.py's default probe: a time limit of a share of the training time and one full pass
    planned from the training's speed, up to the probe size (a share large enough for all of
    it here); the summary says how many examples a probe cut short by the time got."""
    from lrbs_tf.cli.run import budget_lines, summary
    from lrbs_tf.training.config import ProbeSettings

    settings = ProbeSettings(
        examples=160, noise_examples=100, batch_size=128, trace_matvecs=9,
        frobenius_samples=4, lanczos_max_steps=20, time_share=1000.0,
    )  # fmt: skip
    config = small(tmp_path, epochs=1, probe=settings)
    results = train(config)
    budget = results["probe"]["budget"]
    assert budget["time_share"] == 1000.0
    assert budget["max_seconds"] == pytest.approx(max(1000 * results["train_time"], 10.0))
    assert [(p["examples"], p["full"]) for p in budget["passes"]] == [(160, True)]
    assert (
        budget["stopped_by"] == "the probe size" and results["probe"]["noise_num_examples"] == 100
    )
    assert results["probe"]["seconds"] == budget["seconds"] and not budget["light"]
    assert "as many as" not in summary(results, config)
    cut = dict(budget, stopped_by="the time limit", time_share=1.0, max_seconds=12.0, light=True)
    cut["passes"] = [{"examples": 64, "seconds": 9.0, "full": False}]
    assert budget_lines({"budget": cut}) == [
        "           on 64 examples (a light pass: a third of the trace and ‖H‖_F samples), as "
        "many as 1 × the training time allowed (12 s); tools/probe.py on the run folder with "
        "--examples N measures it on N"
    ]


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--probe", "--probe-examples", "6000", "--train-size", "1000"], "--probe-examples"),
        (["--probe", "--probe-bn", "ghost"], "--probe-bn"),
        (["--probe-every", "-1"], "--probe-every"),
        (["--probe", "--probe-noise-examples", "1"], "noise-examples"),
    ],
)
def test_bad_probe_flags(args, fragment, tmp_path):
    proc = run_script(
        "experiments/run.py", "--ratio", "0.1/100", *args, "--logdir", tmp_path, timeout=60
    )
    assert proc.returncode == 2 and fragment in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_probe_tool_refuses_bad_run_folders(tmp_path):
    proc = run_script("tools/probe.py", tmp_path / "nothing", timeout=60)
    assert proc.returncode == 2 and "nothing is missing" in proc.stderr
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text('{"config": {"num_tr')
    proc = run_script("tools/probe.py", tmp_path / "half", timeout=60)
    assert proc.returncode == 2 and "corrupt" in proc.stderr and "Traceback" not in proc.stderr

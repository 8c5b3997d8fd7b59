"""Summaries and records say what ran: each epoch's S, η and η/S (both ratios of a cyclic batch
size), the ranges in the summary, the speed of the training steps apart from the probes, one
final probe (not a second measurement of the weights the last streaming probe measured), and
the advisor's recommendation by name."""

import logging

import numpy as np
import pytest

from lrbs_tf.theory.advice import advise


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    rng = np.random.default_rng(0)
    y = np.arange(300) % 3
    x = rng.uniform(0, 0.3, (300, 8, 8, 1)).astype(np.float32)
    for c in range(3):
        x[y == c, 2 * c : 2 * c + 3] += 0.7
    path = tmp_path_factory.mktemp("what_ran") / "shapes.npz"
    np.savez(path, x_train=x, y_train=y)
    return str(path)


def test_a_cyclic_batch_size_shows_both_ratios_and_one_final_probe(npz, tmp_path, caplog):
    from lrbs_tf.cli.run import summary
    from lrbs_tf.probes.settings import ProbeSettings
    from lrbs_tf.training.config import RunConfig
    from lrbs_tf.training.run import train
    from lrbs_tf.training.tensorboard import read_scalars

    config = RunConfig(
        lr=0.02,
        batch_size=40,
        bs_schedule="cyclic:40,25:1",
        epochs=2,
        width=8,
        dataset=npz,
        logdir=str(tmp_path),
        probe=ProbeSettings(examples=60, noise_examples=20),
        probe_every=1,
        jit_compile="off",  # compiling costs more than it saves here
    ).validate()
    with caplog.at_level(logging.INFO, logger="lrbs_tf"):
        results = train(config, progress="epoch")
    epochs, n = results["epochs"], config.num_train  # 243: 40 × 6 + 3, then 25 × 9 + 18
    assert [(e["batch_size"], e["steps"]) for e in epochs] == [(40, -(-n // 40)), (25, -(-n // 25))]
    assert [e["lr"] for e in epochs] == pytest.approx([0.02, 0.02])
    assert [e["ratio"] for e in epochs] == pytest.approx([0.02 / 40, 0.02 / 25])
    lines = [r.getMessage() for r in caplog.records if ": epoch " in r.getMessage()]
    assert "epoch 1/2: S 40, η 0.02, η/S 0.0005;" in lines[0]
    assert "epoch 2/2: S 25, η 0.02, η/S 0.0008;" in lines[1]
    text = summary(results, config)
    assert "η/S        0.0005 to 0.0008 (S 25 to 40, η 0.02) over the run" in text
    # the final probe is the streaming probe after the last epoch: probed twice, not three times
    assert [p["epoch"] for p in results["probe_history"]] == [1, 2]
    assert results["probe"]["after_epoch"] == 2
    assert results["probe"]["lambda_max"] == results["probe_history"][-1]["lambda_max"]
    probes = sum(p["seconds"] for p in results["probe_history"])
    assert f"{probes:.1f} s of them probes" in text
    assert f"over {results['train_time']:.1f} s of training steps" in text
    assert len(read_scalars(f"{config.run_dir}/tb/probe")["probe/width_sharpness"]) == 2


@pytest.mark.parametrize(
    "sharpness,target,rule,lr",
    [  # from 0.1/100, N = 50000: η·λ_step of linear, sqrt, none against the line 3.7
        (10.0, 200, "linear", 0.2),  # 2.0
        (20.0, 200, "sqrt", 0.1 * 2**0.5),  # 4.0, 2.83
        (30.0, 200, "none", 0.1),  # 6.0, 4.24, 3.0
        (100.0, 400, None, None),  # 40, 20, 10
    ],
)
def test_the_advisor_names_its_recommendation(sharpness, target, rule, lr):
    """The recommendation is the first stable rule of linear (keeps η/S), sqrt and none."""
    recommended = advise(0.1, 100, 50000, sharpness, 1000.0, target)["recommendation"]
    assert recommended["rule"] == rule
    if rule is not None:
        assert recommended["lr"] == pytest.approx(lr)

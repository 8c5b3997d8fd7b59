"""The probe budget (lrbs_tf.probes.budget): more examples until every figure's relative error
is below the target, or as many as the time left allows — checked on a real Prober of a small
network, and the planning rule on numbers worked by hand."""

import dataclasses
import logging

import keras
import numpy as np
import pytest

from lrbs_tf.probes import budget
from lrbs_tf.probes.prober import Prober
from lrbs_tf.probes.settings import ProbeSettings

N = 1200


@pytest.fixture(scope="module")
def problem():
    """A small tanh network fitted briefly on a noisy teacher (not at a minimum)."""
    keras.utils.set_random_seed(5)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(N, 6)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(6, 3)) + rng.normal(scale=1.5, size=(N, 3)), axis=1)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="tanh")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(x, y, batch_size=50, epochs=1, verbose=0)
    return model, x, y


def settings(**changes) -> ProbeSettings:
    base = dict(examples=64, noise_examples=64, batch_size=64, finite_difference=False,
                trace_matvecs=12, frobenius_samples=6, lanczos_max_steps=20)  # fmt: skip
    return ProbeSettings(**(base | changes))


def test_a_relative_error_target_adds_examples_until_every_figure_is_below_it(problem):
    model, x, y = problem
    made = []

    def make(chosen):
        made.append(chosen.examples)
        return Prober(model, x, y, chosen, step_batch=50)

    target = 0.15
    found = budget.measure(make, settings(rel_error=target), N, lr=0.1)
    record = found["budget"]
    examples = [p["examples"] for p in record["passes"]]
    assert examples == made and examples == sorted(examples) and len(set(examples)) == len(examples)
    assert examples[0] == 64 and len(examples) > 1  # 64 examples are not enough for 15 %
    assert found["seconds"] == record["seconds"] >= sum(p["seconds"] for p in record["passes"])
    errors = budget.relative_errors(found)
    if record["reached"]:
        assert all(e <= target for e in errors.values()), errors
    else:  # only the whole training set stops it short of the target
        assert record["stopped_by"] == "the training set" and examples[-1] == N
        assert set(record["not_reached"]) == {k for k, e in errors.items() if not e <= target}
    # each pass after the first asks for n × (worst error / target)², at least twice n
    first = Prober(model, x, y, settings(), step_batch=50)(lr=0.1)
    worst = max(e for e in budget.relative_errors(first).values() if e > target)
    planned = N if np.isinf(worst) else int(np.ceil(64 * (worst / target) ** 2))
    wanted = min(max(planned, 128), N)  # an infinite error (a B_simple bound): the whole set
    assert examples[1] == wanted


def test_a_time_limit_starts_with_the_pilot_and_plans_from_its_cost(problem):
    model, x, y = problem
    found = budget.measure(
        lambda chosen: Prober(model, x, y, chosen),
        settings(examples=1000, max_seconds=1e-3),
        N,
        0.1,
    )
    record = found["budget"]  # the pilot alone overran a 1 ms limit: nothing more is tried
    assert [p["examples"] for p in record["passes"]] == [budget.PILOT]
    assert record["stopped_by"] == "the time limit" and record["reached"] is None
    assert record["light"] and "finite_difference" not in found  # a light pilot's figures
    assert budget.budget_note(record) == (
        "64 examples (a light pass: a third of the trace and ‖H‖_F samples): stopped by the "
        "time limit of 0.001 s"
    )


@pytest.mark.parametrize(
    "elapsed,cost,expected",
    [
        (8.0, (0.0, 0.125), 736),  # 92 s left at 1/8 s per example
        (8.0, (4.0, 0.125), 704),  # 4 s of it spent again on tracing: 88 s for examples
        (8.0, (0.0, 0.0625), 1200),  # enough time for the whole training set
        (95.0, (0.0, 0.125), None),  # 5 s left: fewer examples than the pass before
    ],
)
def test_the_next_pass_fits_the_time_left(elapsed, cost, expected):
    current = settings(examples=64)
    limit = dataclasses.replace(current, max_seconds=100.0)
    missing = {"trace": 0.5}  # no target: every figure counts as not there
    assert budget.next_examples(current, missing, N, elapsed, cost, limit) == expected


def test_a_pass_is_priced_per_example_from_its_hvps_and_fixed_for_the_rest():
    """A light 64-example pass of 10 s whose HVP took 0.05 s: 0.05 × its HVPs is work that
    grows with the examples, the rest (tracing) is spent again by every pass."""
    from lrbs_tf.probes.prober import pass_cost

    s = settings(examples=64, finite_difference=True)
    found = {"seconds": 10.0, "hvp_seconds": 0.05, "lanczos_matvecs": 10}
    fixed, per_example = budget.price(s, found, full=False)
    assert fixed == pytest.approx(10.0 - 0.05 * pass_cost(s, found, False))
    assert per_example == pytest.approx(0.05 * pass_cost(s, found, True) / 64)
    assert budget.price(s, dict(found, hvp_seconds=None), True) == (0.0, 10.0 / 64)


def test_a_share_of_the_training_time_is_a_time_limit_within_the_probe_sizes(problem, caplog):
    """run.py's default probe (no size, error or time limit given): a light pilot, then a full
    pass on as many examples as the time allows, but never more than --probe-examples."""
    from lrbs_tf.probes.settings import MIN_SECONDS
    from lrbs_tf.training.run import time_shared

    assert time_shared(settings(time_share=0.5), 100.0, 10**4, N)[0].max_seconds == 50.0
    floor = time_shared(settings(time_share=1.0), 0.5, 10**4, N)[0]
    assert floor.max_seconds == MIN_SECONDS
    model, x, y = problem
    chosen, _ = time_shared(settings(examples=200, noise_examples=100, time_share=1.0), 1e3, 1, N)
    caplog.set_level(logging.INFO, logger="lrbs_tf")
    found = budget.measure(lambda c: Prober(model, x, y, c), chosen, N, 0.1)
    assert "s of the time limit left on 64 examples; probing again on 200" in caplog.text
    record = found["budget"]
    # the pilot is light (the probe run during training), the pass after it full
    assert [(p["examples"], p["full"]) for p in record["passes"]] == [(64, False), (200, True)]
    assert record["stopped_by"] == "the probe size" and record["time_share"] == 1.0
    assert record["reached"] is None and record["not_reached"] == {} and not record["light"]
    assert found["noise_num_examples"] == 100  # the noise's own size, not the pass's
    # a pilot as large as the probe may be is the probe: full
    small, _ = time_shared(settings(examples=50, noise_examples=50, time_share=1.0), 1e3, 1, N)
    found = budget.measure(lambda c: Prober(model, x, y, c), small, N, 0.1)
    assert [(p["examples"], p["full"]) for p in found["budget"]["passes"]] == [(50, True)]


def test_the_pilot_prices_a_full_pass_by_the_hvps_the_probe_makes(problem):
    """pass_cost counts the HVPs a full and a light probe make (counted on the operators; the
    finite differences and the noise go through gradients, priced apart)."""
    from lrbs_tf.probes.prober import FD_HVPS, pass_cost

    model, x, y = problem
    chosen = settings(examples=200, noise_examples=200, trace_matvecs=30, frobenius_samples=9)
    counted = {}
    for full in (True, False):
        prober = Prober(model, x, y, chosen, step_batch=50)
        found = prober(lr=0.1, full=full)
        counted[full] = prober.op.matvecs + prober.step_op.matvecs
        noise = 2.0  # noise_examples == examples
        assert pass_cost(chosen, found, full) - noise == pytest.approx(counted[full], abs=2), full
    fd = dataclasses.replace(chosen, finite_difference=True)
    assert pass_cost(fd, found, True) - pass_cost(chosen, found, True) == pytest.approx(FD_HVPS * 9)


def test_a_time_share_is_its_own_budget():
    from lrbs_tf.settings import ConfigError

    for other in ({"max_seconds": 30.0}, {"rel_error": 0.1}):
        with pytest.raises(ConfigError, match="--probe-time-share is a budget of its own"):
            settings(time_share=1.0, **other).validate(N)
    settings(time_share=0.0, max_seconds=30.0).validate(N)  # 0: no share


@pytest.mark.parametrize(
    "limit,step_seconds,most,expected",
    [
        (13.6, 1 / 18_360, 5000, 156),  # the MLP: 18,360 training examples/s, a 13.6 s limit
        (10.0, 1 / 2_708, 2700, None),  # a small CNN at 2,708/s: too few, the light pilot
        (500.0, 1 / 25_000, 5000, 5000),  # 200 MLP epochs: the probe size, no more
    ],
)
def test_a_time_shared_probe_plans_its_first_pass_from_the_training_speed(
    limit, step_seconds, most, expected
):
    """Half the limit for a full pass at FULL_PROBE_STEPS training steps per example; none
    when it would be the pilot's size or fewer."""
    assert budget.first_examples(limit, step_seconds, most) == expected

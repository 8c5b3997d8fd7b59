"""A probe that fits a budget the user sets: every figure's relative error below a target, or a
time limit — not a guess at how many examples are enough.

:func:`measure` probes on ``settings.examples`` examples (the first pass), reads each figure's
relative standard error (its error over the choice of examples and the estimator's own,
:mod:`lrbs_tf.probes.sampling`), and while some figure is above ``settings.rel_error`` probes
again on more examples: n × (worst relative error / target)², as a standard error falls as
1/√n, but at most the training set and at most what the time left allows. It stops at the
target, at the whole training set, or when ``settings.max_seconds`` would be exceeded, and says
which figures did not get there. A B_simple that is only a lower bound (‖g‖² not significantly
above 0) counts as not there yet.

Under a time limit the first pass is a pilot of :data:`PILOT` examples — light when only the
time limits the probe (a third of the trace and ‖H‖_F samples, no finite differences: the probe
run during training) — and the next a full pass on as many examples as the time left allows.
A pass is priced from the last one (:func:`price`): per example, its HVP's time × the HVPs of a
full pass; fixed, the rest of its time (tracing, the step sharpness's examples), spent again by
every pass. When the time allows no second pass, the pilot's figures are the probe's
(``budget["light"]`` says so).

A limit of ``settings.time_share`` × the training time (run.py's default when no probe size,
error or time limit is given) works as a time limit whose passes use at most
``settings.examples``: a default probe costs about what training did, not 80× on a small CNN.
When the training's speed says a full pass on more than :data:`PILOT` examples fits in half the
limit (:func:`first_examples`), that pass comes first instead of the pilot: a model whose probe
takes longer to trace than to run does not spend its time on a pilot and a second tracing.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

log = logging.getLogger(__name__)

# Examples of the first pass under a time limit: small, so that even a tight limit is kept
# on a model whose HVPs are slow (a fixed 500 took 47 s of a 12 s limit on a 20k-parameter
# CNN); its time, tracing included, prices the next pass from above.
PILOT = 64
FIGURES = ("width_sharpness", "step_sharpness", "trace", "frobenius", "trace_c_unbiased")


def relative_errors(found: dict) -> dict:
    """``{figure: stderr / |value|}`` of a probe's figures (inf for a B_simple bound)."""
    out = {}
    for key in FIGURES:
        if key in found and found.get(f"{key}_stderr") is not None:
            value, se = found[key], found[f"{key}_stderr"]
            out[key] = se / abs(value) if value and math.isfinite(se) else math.inf
    if "b_simple" in found:
        bound = found.get("b_simple_kind") == "lower bound"
        se = found.get("b_simple_stderr")
        out["b_simple"] = math.inf if bound or se is None else se / abs(found["b_simple"])
    return out


def measure(
    make_prober, settings, num_train: int, lr: float | None, first=None, planned=None
) -> dict:
    """Probe within ``settings.rel_error`` and ``settings.max_seconds`` (see the module
    docstring). ``make_prober(settings) -> Prober``; ``first``: a Prober already built on
    ``settings`` (its pass is the first); ``planned``: the examples of a full first pass
    planned from elsewhere (:func:`first_examples`) instead of the pilot. Returns the last
    probe's figures with ``budget``: the target, the limit, the examples of every pass, whether
    every figure got there and the relative errors of those that did not."""
    tick, passes, target = time.time(), [], settings.rel_error or 0.0
    full = True
    if first is None and settings.max_seconds is not None:  # a first pass, then what fits
        pilot = min(planned or PILOT, settings.examples)
        first = make_prober(sized(settings, pilot))
        # a pilot is light when only time limits the probe and more examples may follow; with
        # a target its figures' errors plan the next pass, and a light pass's are the larger
        full = (
            planned is not None
            or settings.rel_error is not None
            or pilot >= most_examples(settings, num_train)
        )
    prober = first or make_prober(settings)
    while True:
        found = prober(lr=lr, full=full)
        passes.append(
            {"examples": prober.settings.examples, "seconds": found["seconds"], "full": full}
        )
        missing = {k: e for k, e in relative_errors(found).items() if not e <= target}
        if not missing:
            break
        n = next_examples(
            prober.settings,
            missing,
            num_train,
            time.time() - tick,
            price(prober.settings, found, full),
            settings,
        )
        if n is None:
            break
        log.info(
            "probe: %s on %d examples; probing again on %d",
            (
                f"{', '.join(f'{k} {e:.2g}' for k, e in missing.items())} above "
                f"{settings.rel_error:g} relative error"
                if settings.rel_error
                else f"{settings.max_seconds - (time.time() - tick):.0f} s of the time limit left"
            ),
            prober.settings.examples,
            n,
        )
        prober, full = make_prober(sized(settings, n)), True
    found["budget"] = dict(
        record(settings, passes, missing, prober.settings.examples, num_train),
        seconds=time.time() - tick,
    )
    found["seconds"] = found["budget"]["seconds"]  # the probe's time: every pass, not the last
    if missing and settings.rel_error:
        log.warning("probe: %s", budget_note(found["budget"]))
    return found


# What a full probe costs per example, in training steps of one example, from above: measured
# about 630 on the MLP (a full pass on 312 examples: 18.7 s, about 8 of them tracing, at 54 µs
# per training example) and 280 on examples/small_cnn.py (64 examples: 11.6 s, about 5 tracing,
# at 0.37 ms per training example) — probe batches are small, groups of n/8 examples.
FULL_PROBE_STEPS = 800


def first_examples(limit: float, step_seconds: float, most: int) -> int | None:
    """The examples of a probe's one full pass within ``limit`` seconds, planned from the
    training: ``step_seconds`` per training example-step × :data:`FULL_PROBE_STEPS` per probe
    example, for half the limit (the other half for tracing), at most ``most``; None when that
    is fewer than :data:`PILOT` (the light pilot is then the better use of the time)."""
    planned = int(0.5 * limit / max(FULL_PROBE_STEPS * step_seconds, 1e-12))
    return min(planned, most) if planned > PILOT else None


def sized(settings, n: int):
    """``settings`` for a pass on ``n`` examples: the gradient noise on as many (on at most
    ``settings.noise_examples`` under a time share, whose sizes are the defaults' at most)."""
    noise = min(settings.noise_examples, n) if settings.time_share else n
    return dataclasses.replace(settings, examples=n, noise_examples=noise)


def price(settings, found: dict, full: bool) -> tuple[float, float]:
    """``(fixed seconds, seconds per example)`` of a full pass, from the pass just made: per
    example, its HVP's time × the HVPs of a full pass; fixed, the rest of its time (tracing,
    the step sharpness's own examples), which the next pass spends again."""
    from lrbs_tf.probes.prober import pass_cost

    hvp = found.get("hvp_seconds")
    if not hvp:  # no HVP timed: all of the pass per example
        ratio = (
            1.0 if full else pass_cost(settings, found, True) / pass_cost(settings, found, False)
        )
        return 0.0, found["seconds"] * ratio / settings.examples
    fixed = max(found["seconds"] - hvp * pass_cost(settings, found, full), 0.0)
    return fixed, hvp * pass_cost(settings, found, True) / settings.examples


def record(settings, passes: list, missing: dict, examples: int, num_train: int) -> dict:
    """What ``results.json`` keeps of a budgeted probe that ended on ``examples``: with a
    target, whether every figure reached it and the relative errors of those that did not."""
    return {
        "rel_error": settings.rel_error,
        "max_seconds": settings.max_seconds,
        "time_share": settings.time_share,
        "passes": passes,
        "light": not passes[-1]["full"],  # the probe's figures are a light pass's
        "reached": not missing if settings.rel_error else None,
        "not_reached": missing if settings.rel_error else {},
        "stopped_by": (
            None
            if not missing
            else "the training set"
            if examples >= num_train
            else "the probe size"
            if examples >= most_examples(settings, num_train)
            else "the time limit"
        ),
    }


def next_examples(current, missing: dict, num_train: int, elapsed: float, cost, settings):
    """The examples of the next pass, or None when no pass can get closer (the whole
    training set already, or the time left is too short for more examples). ``cost``: a full
    pass's ``(fixed seconds, seconds per example)`` (:func:`price`)."""
    n, target = current.examples, settings.rel_error or 0.0
    worst = max(missing.values())
    wanted = (
        num_train if not (math.isfinite(worst) and target) else math.ceil(n * (worst / target) ** 2)
    )
    wanted = min(max(wanted, 2 * n), most_examples(settings, num_train))
    if settings.max_seconds is not None:
        fixed, per_example = cost
        left = settings.max_seconds - elapsed - fixed
        wanted = min(wanted, int(left / max(per_example, 1e-12)))
    return wanted if wanted > n else None


def most_examples(settings, num_train: int) -> int:
    """The most examples a pass may use: the training set, or ``settings.examples`` for a
    probe limited by a share of the training time (its sizes are the defaults' at most)."""
    return min(settings.examples, num_train) if settings.time_share else num_train


def budget_note(budget: dict) -> str:
    """One sentence: with a target, which figures did not reach it and why the probe stopped;
    under a time limit alone, what it stopped at."""
    last = budget["passes"][-1]
    why = (
        f"by the time limit of {budget['max_seconds']:g} s"
        if budget["stopped_by"] == "the time limit"
        else f"at the probe size ({last['examples']} examples)"
        if budget["stopped_by"] == "the probe size"
        else "at the whole training set"
    )
    light = " (a light pass: a third of the trace and ‖H‖_F samples)" if budget.get("light") else ""
    if not budget.get("rel_error"):
        return f"{last['examples']} examples{light}: stopped {why}"
    return (
        f"{', '.join(f'{k} ({e:.2g})' for k, e in budget['not_reached'].items())} did not reach "
        f"a relative error of {budget['rel_error']:g} on {last['examples']} examples{light}: "
        f"stopped {why}"
    )

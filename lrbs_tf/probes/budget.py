"""A probe that fits a budget the user sets: every figure's relative error below a target, or a
time limit — not a guess at how many examples are enough.

:func:`measure` probes on ``settings.examples`` examples (the first pass), reads each figure's
relative standard error (its error over the choice of examples and the estimator's own,
:mod:`lrbs_tf.probes.sampling`), and while some figure is above ``settings.rel_error`` probes
again on more examples: n × (worst relative error / target)², as a standard error falls as
1/√n, but at most the training set and at most what the time left allows (the time of a pass
grows in proportion to its examples; the next pass is planned from the last one's). It stops
at the target, at the whole training set, or when ``settings.max_seconds`` would be exceeded,
and says which figures did not get there. Under a time limit the first pass is a light pilot
of :data:`PILOT` examples (a third of the trace and ‖H‖_F samples, no finite differences: the
probe run during training), the next a full pass on as many examples as the time left allows
at the pilot's cost per example scaled to a full pass's HVPs (each pass traces its functions
again, so the pilot's time overstates the cost). When the time allows no second pass, the
pilot's figures are the probe's. A
B_simple that is only a lower bound (‖g‖² not significantly above 0) counts as not there yet.

A limit of ``settings.time_share`` × the training time (run.py's default when no probe size,
error or time limit is given) works as a time limit whose passes use at most
``settings.examples``: a default probe costs about what training did, not 80× on a small CNN.
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


def measure(make_prober, settings, num_train: int, lr: float | None, first=None) -> dict:
    """Probe within ``settings.rel_error`` and ``settings.max_seconds`` (see the module
    docstring). ``make_prober(settings) -> Prober``; ``first``: a Prober already built on
    ``settings`` (its pass is the first). Returns the last probe's figures with ``budget``:
    the target, the limit, the examples of every pass, whether every figure got there and the
    relative errors of those that did not."""
    from lrbs_tf.probes.prober import pass_cost

    tick, passes, target = time.time(), [], settings.rel_error or 0.0
    full = True
    if first is None and settings.max_seconds is not None:  # a light pilot, then what fits
        pilot = min(settings.examples, PILOT)
        first = make_prober(dataclasses.replace(settings, examples=pilot, noise_examples=pilot))
        full = False
    prober = first or make_prober(settings)
    while True:
        found = prober(lr=lr, full=full)
        errors = relative_errors(found)
        passes.append(
            {"examples": prober.settings.examples, "seconds": found["seconds"], "full": full}
        )
        missing = {k: e for k, e in errors.items() if not e <= target}
        if not missing:
            break
        # what a full pass costs per example, from this one
        found["seconds_full"] = found["seconds"] * (
            1.0
            if full
            else pass_cost(prober.settings, found, True) / pass_cost(prober.settings, found, False)
        )
        n = next_examples(prober.settings, missing, num_train, time.time() - tick, found, settings)
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
        prober = make_prober(dataclasses.replace(settings, examples=n, noise_examples=n))
        full = True
    found["budget"] = dict(
        record(settings, passes, missing, prober.settings.examples, num_train),
        seconds=time.time() - tick,
    )
    found["seconds"] = found["budget"]["seconds"]  # the probe's time: every pass, not the last
    if missing and settings.rel_error:
        log.warning("probe: %s", budget_note(found["budget"]))
    return found


def record(settings, passes: list, missing: dict, examples: int, num_train: int) -> dict:
    """What ``results.json`` keeps of a budgeted probe that ended on ``examples``."""
    return {
        "rel_error": settings.rel_error,
        "max_seconds": settings.max_seconds,
        "time_share": settings.time_share,
        "passes": passes,
        "reached": not missing,
        "not_reached": missing,
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


def next_examples(current, missing: dict, num_train: int, elapsed: float, found, settings):
    """The examples of the next pass, or None when no pass can get closer (the whole
    training set already, or the time left is too short for more examples)."""
    n, target = current.examples, settings.rel_error or 0.0
    worst = max(missing.values())
    wanted = (
        num_train if not (math.isfinite(worst) and target) else math.ceil(n * (worst / target) ** 2)
    )
    wanted = min(max(wanted, 2 * n), most_examples(settings, num_train))
    if settings.max_seconds is not None:
        left = settings.max_seconds - elapsed
        wanted = min(wanted, int(n * left / max(found.get("seconds_full", found["seconds"]), 1e-9)))
    return wanted if wanted > n else None


def most_examples(settings, num_train: int) -> int:
    """The most examples a pass may use: the training set, or ``settings.examples`` for a
    probe limited by a share of the training time (its sizes are the defaults' at most)."""
    return min(settings.examples, num_train) if settings.time_share else num_train


def budget_note(budget: dict) -> str:
    """One sentence: which figures did not reach the target, and why the probe stopped."""
    last = budget["passes"][-1]
    return (
        f"{', '.join(f'{k} ({e:.2g})' for k, e in budget['not_reached'].items())} did not reach "
        f"a relative error of {budget['rel_error']:g} on {last['examples']} examples: stopped "
        + (
            f"by the time limit of {budget['max_seconds']:g} s"
            if budget["stopped_by"] == "the time limit"
            else f"at the probe size ({last['examples']} examples)"
            if budget["stopped_by"] == "the probe size"
            else "at the whole training set"
        )
    )

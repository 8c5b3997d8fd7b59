"""Advise on moving a finished run to another batch size: η per rule, and whether η/S theory
still holds there.

    python tools/advise.py runs/<run> --batch-size 2000 [--json]

Needs the run's curvature probe (``run.py --probe``, or ``tools/probe.py <run>`` which writes
``probe.json``): the step sharpness λ_step (the curvature of the mini-batch objective SGD steps
on) and B_simple at the end of training. Prints η for the linear, sqrt and no rescaling rules,
η·λ_step against the stability limit (:mod:`lrbs_tf.theory.advice`), the finite-population
factor (N − S)/(N − 1), S against B_simple, and steps per epoch before and after. The
curvature is that of the final weights at the old batch size; at a new one SGD will settle
elsewhere and λ_step changes with S, so treat the checks as a first-order guide. When a
finished scaling test of the run exists (``lrbs-scale --from RUN``, found in ``RUN/../scaling/``
or given with ``--scaling DIR``), it quotes what was measured at that S: the loss after the
test's examples against the noise floor per rule, and the measured k*.
"""

from __future__ import annotations

import json
import os

from lrbs_tf import files
from lrbs_tf.cli.common import ArgumentParser, command, fail, format_table, program
from lrbs_tf.probes.sampling import text
from lrbs_tf.theory.advice import advise, undecided
from lrbs_tf.training.folder import RunFolderError, read_json, read_run

PROG = program("advise.py")
PROBE_ERRORS = ("step_sharpness_stderr", "b_simple_stderr", "b_simple_kind")


def load_probe(run_dir: str) -> dict:
    _, results = read_run(run_dir, statuses=("finished",))
    if results.get("probe"):
        return results["probe"]
    path = os.path.join(run_dir, "probe.json")
    if os.path.exists(path):
        return read_json(path)
    raise RunFolderError(
        f"{run_dir} has no curvature probe: rerun with --probe or run "
        f"'python tools/probe.py {run_dir}'"
    )


@command(PROG)
def main(argv=None):
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--batch-size", type=int, required=True, help="the target batch size S")
    p.add_argument(
        "--scaling",
        action="append",
        default=[],
        metavar="DIR",
        help="a scaling test of the run (lrbs-scale), or a folder of them, to quote besides "
        "those found next to the run (RUN/../scaling/)",
    )
    p.add_argument("--json", action="store_true", help="print the advice as JSON only")
    args = p.parse_args(argv)
    try:
        advice = advice_for(args.run_dir, args.batch_size, args.scaling)
    except (RunFolderError, ValueError, KeyError, TypeError) as e:
        fail(PROG, e if not isinstance(e, KeyError) else f"run files lack {e}")
    advice["scaling_tests"] = measured(args.run_dir, args.batch_size, args.scaling)
    if args.json:
        print(json.dumps(files.jsonable(advice), indent=2))
    else:
        show(args.run_dir, advice)
    return 0


def advice_for(run_dir: str, batch_size: int, places=()) -> dict:
    """The advice for moving the finished run in ``run_dir`` to ``batch_size``; without a
    probe of its own, the probe of a scaling test that started from its final weights."""
    saved, results = read_run(run_dir, statuses=("finished",))
    config = saved["config"]
    try:
        probe = load_probe(run_dir)
    except RunFolderError:
        final = len(results["epochs"])
        probe = probe_of_tests(run_dir, config.get("batch_size"), final, places)
        if probe is None:
            raise
    if "step_sharpness" not in probe:
        raise RunFolderError(
            f"the probe of {run_dir} has no step sharpness (probed by an earlier "
            f"version): run 'python tools/probe.py {run_dir}' again"
        )
    out = dict(
        advise(
            config["lr"],
            config["batch_size"],
            config["num_train"],
            float(probe["step_sharpness"]),
            float(probe["b_simple"]),  # inf (restored from null) or, from lrbs_tf 0.2, "inf"
            batch_size,
        ),
        measured_model=results.get("measured_model"),
        probe={k: probe.get(k) for k in PROBE_ERRORS},
    )
    out["probe_source"] = probe.get("source", "the run's own probe")
    return out


def probe_of_tests(run_dir: str, batch: int, final: int, places) -> dict | None:
    """The step sharpness at the run's S and B_simple from the probe of θ0 of a finished
    scaling test that started from the run's final weights (epoch ``final``), if one did."""
    from lrbs_tf.scaling.folder import tests_of

    for path, _, start in tests_of(run_dir, places):
        probe_file = os.path.join(path, "probe.json")
        if start.get("epoch") != final or not os.path.isfile(probe_file):
            continue
        probe = read_json(probe_file)
        sharpness = probe.get("step_sharpness_by_batch", {}).get(str(batch))
        if sharpness is not None:
            source = f"the probe of the run's final weights in the scaling test {path}"
            return {"step_sharpness": sharpness, "b_simple": probe["b_simple"], "source": source}
    return None


def measured(run_dir: str, batch_size: int, places) -> list[dict]:
    """The finished scaling tests of the run, quoted at ``batch_size``."""
    from lrbs_tf.scaling.folder import tests_of
    from lrbs_tf.scaling.report import quote

    return [
        {
            "path": path,
            "from": report["label"],
            "examples": report["plan"]["examples"],
            "lines": quote(report, batch_size),
            "verdict": report["verdict"],
        }
        for path, report, _ in tests_of(run_dir, places)
    ]


def show(run_dir: str, advice: dict) -> None:
    b = advice["base"]
    print(f"run        {run_dir}")
    print(
        f"now        η/S = {b['lr']:g}/{b['batch_size']} = {b['ratio']:.4g}, N = "
        f"{b['num_train']}, step sharpness λ_step = {b['step_sharpness']:.4g} (BatchNorm over "
        f"batches of {b['batch_size']}; η·λ_step = {b['lr_times_step_sharpness']:.3g}), "
        f"B_simple {text(advice['probe'] | {'b_simple': b['b_simple']}, 'b_simple')}"
    )
    if advice.get("probe_source", "the run's own probe") != "the run's own probe":
        print(f"probe      {advice['probe_source']}")
    print(f"target     S = {advice['target_batch']}\n")
    print(
        format_table(
            ["rule", "η", "η/S", "η/S change", "η·λ_step", "verdict"],
            [
                [
                    name,
                    f"{r['lr']:.4g}",
                    f"{r['ratio']:.4g}",
                    f"×{r['ratio_change']:.3g}",
                    f"{r['lr_times_step_sharpness']:.3g}",
                    f"{r['verdict']} ({r['reason']})",
                ]
                for name, r in advice["rules"].items()
            ],
        )
    )
    show_checks(advice)


def show_checks(advice: dict) -> None:
    """S/N, S/B_simple, the steps per epoch and the verdict on the linear rule."""
    b, c = advice["base"], advice["checks"]
    print(
        f"\nS/N        {advice['target_batch'] / b['num_train']:.3g}: finite-population factor "
        f"(N−S)/(N−1) = {c['finite_population_factor']:.3f}"
        + (
            ""
            if c["batch_well_below_n"]
            else " — S is not well below N: the gradient noise shrinks and the η/S scaling breaks"
        )
    )
    bound = (advice.get("probe") or {}).get("b_simple_kind") == "lower bound"
    if bound and not c["noise_dominated"]:  # S ≥ a lower bound of B_simple: no verdict
        print(
            f"S/B_simple ≤ {c['batch_over_b_simple']:.3g}: B_simple is only a lower bound, "
            "so whether S is beyond the noise scale is undecided (below)"
        )
    else:
        print(
            f"S/B_simple {c['batch_over_b_simple']:.3g}: "
            + (
                "noise-dominated steps, linear scaling keeps the dynamics with fewer steps"
                if c["noise_dominated"]
                else "beyond the simple noise scale: larger batches buy less and less"
            )
        )
    steps = advice["steps_per_epoch"]
    print(
        f"steps      {steps['before']} → {steps['after']} per epoch "
        f"(×{steps['after'] / steps['before']:.3g})"
    )
    if advice.get("measured_model"):
        print(f"warning    {advice['measured_model']}")
    for line in undecided(advice, advice["probe"]):
        print(f"undecided  {line}")
    holds = advice["linear_rule_expected_to_hold"]
    print(
        "verdict    linear rule "
        + ("expected to hold" if holds else "outside the regime where the theory holds")
    )
    for test in advice.get("scaling_tests", []):
        print(
            f"\nmeasured   scaling test {test['path']} (from {test['from']}, "
            f"{test['examples']} examples per branch):"
        )
        for line in test["lines"]:
            print(f"           {line}")
    if not advice.get("scaling_tests"):
        print(
            "\nmeasured   no scaling test of this run found: 'lrbs-scale --from RUN' measures "
            "where equal η/S stops meaning equal training"
        )
    r = advice["recommendation"]
    print(
        f"\nrecommend  {r['rule']}: η = {r['lr']:.4g} at S = {advice['target_batch']} "
        f"(η/S = {r['ratio']:.4g}; {r['why']})"
        if r["rule"]
        else f"\nrecommend  no rule: {r['why']}"
    )

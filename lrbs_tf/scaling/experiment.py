"""A scaling test, read top to bottom: :func:`run` (the command's path: where θ0 comes from, its
data) → :func:`run_test` (any Keras model and arrays): claim the test's folder, probe θ0, train
every branch (reusing finished ones), then the floor, the verdict per rule, the SVAG result and
the predictions beside them (:func:`analyse`), and the outputs (``scaling.json``, ``.csv``,
``.png``, TensorBoard's HParams).
"""

from __future__ import annotations

import contextlib
import os
import time

import numpy as np

from lrbs_tf import files
from lrbs_tf.scaling.folder import TestFolder
from lrbs_tf.scaling.plan import Plan, resolve
from lrbs_tf.scaling.report import analyse, table_rows
from lrbs_tf.scaling.settings import ScaleSettings
from lrbs_tf.scaling.start import Start, load_start


def default_name(start: Start, plan: Plan) -> str:
    """The test folder's name: where it starts and its base."""
    where = os.path.basename(os.path.normpath(start.spec)) if start.kind != "init" else "init"
    where = os.path.splitext(where)[0] if start.kind == "file" else where
    epoch = f"-e{start.epoch}" if start.kind == "run" else ""  # a warm-up's name has it
    return f"scale-{where}{epoch}-lr{plan.lr0:g}-bs{plan.batch0}-seed{plan.orders[0]}"[:200]


def run(
    settings: ScaleSettings,
    start: Start,
    logdir: str,
    name: str | None = None,
    overwrite: bool = False,
    say=lambda line: None,
    progress: str = "epoch",
    deterministic: bool = False,
) -> dict:
    """The scaling test from ``start`` (see :mod:`lrbs_tf.scaling.start`) in
    ``logdir/name``; the report. ``deterministic``: op determinism is on (XLA stays off)."""
    plan = resolve(settings, start.num_train, start.base, start.momentum)
    path = os.path.join(logdir, name or default_name(start, plan))
    identity = {"start": start.identity(), "plan": plan.to_dict(), "measure": measured(settings)}
    TestFolder.check(path, identity, overwrite)  # refused before anything loads
    model, data = load_start(start, say, progress)
    return run_test(
        model,
        data.train.x,
        data.train.y,
        plan,
        settings,
        path,
        identity,
        overwrite=overwrite,
        say=say,
        label=start.label,
        jit=use_xla(start.config["model"], plan) and not deterministic,
    )


def measured(settings: ScaleSettings) -> dict:
    """What a test measures besides its plan (part of its identity): the subsets of the loss
    at the weights and of BatchNorm, and the probes. (The floor's level is not: a test can be
    judged again at another level from the same branches.)"""
    keep = ("eval_examples", "bn_examples", "probe", "probe_examples", "noise_examples")
    return {k: getattr(settings, k) for k in keep}


def use_xla(model: str, plan: Plan) -> bool:
    """XLA as a run would choose it (:func:`lrbs_tf.training.fitting.choose_jit`): for
    registered models marked for it (the MLP) with at most MAX_XLA_SHAPES batch sizes."""
    from lrbs_tf.models import sources
    from lrbs_tf.training.fitting import MAX_XLA_SHAPES

    sizes = {b.batch for b in plan.branches}
    return sources.describe(model).xla and len(sizes) <= MAX_XLA_SHAPES


def run_test(
    model,
    x,
    y,
    plan: Plan,
    settings: ScaleSettings,
    path: str,
    identity: dict,
    overwrite=False,
    say=lambda line: None,
    loss=None,
    label: str = "θ0",
    jit: bool = False,
) -> dict:
    """Every branch of ``plan`` from ``model``'s current state θ0 on ``(x, y)`` in the test
    folder ``path``. ``loss``: a per-example loss ``fn(y, outputs)`` (default softmax
    cross-entropy); Keras' ``compile`` gets it too and hands it labels of shape (B, 1) for an
    output of (B, 1), so write it for either rank (reshape both to (B,))."""
    from lrbs_tf.scaling.branches import Trainer
    from lrbs_tf.training.folder import weights_digest

    tick = time.time()
    with TestFolder.claim(path, identity, overwrite) as folder, stopped(path):
        folder.check_theta0(weights_digest(model))
        trainer = Trainer(
            model,
            x,
            y,
            plan,
            settings.eval_examples,
            settings.bn_examples,
            plan.orders[0],
            loss,
            jit,
        )
        start = folder.cached("start.json") or trainer.start()
        files.write_json(folder.file("start.json"), start)
        probe = probe_theta0(folder, trainer, plan, settings, loss, say)
        records = train_branches(folder, trainer, plan, say)
        report = analyse(plan, records, start, probe, settings.level, label)
        report.update(
            path=os.path.abspath(path),
            trainer=trainer.describe(),
            wall_time=time.time() - tick,
            train_seconds=sum(r["train_seconds"] for r in records.values()),
            branch_seconds=sum(r["wall_seconds"] for r in records.values()),
            probe_seconds=(probe or {}).get("seconds", 0.0),
        )
        write_outputs(folder, plan, report)
    return report


@contextlib.contextmanager
def stopped(path: str):
    """Ctrl-C or SIGTERM: say that the finished branches are kept (exit status 130 or 143)."""
    from lrbs_tf.training.signals import RunInterrupted, signum_of

    try:
        yield
    except KeyboardInterrupt as stop:
        if isinstance(stop, RunInterrupted):
            raise
        raise RunInterrupted(
            f"interrupted: the finished branches are kept in {path}; the same command "
            "continues with the others",
            signum_of(stop),
        ) from None


def probe_theta0(folder, trainer, plan: Plan, settings: ScaleSettings, loss, say) -> dict | None:
    """At θ0: the full probe at S0 (B_simple with its standard error, the width sharpness) and
    the step sharpness at every S tried (``probe.json``, reused)."""
    cached = folder.cached("probe.json")
    if cached is not None or not settings.probe:
        return cached
    from lrbs_tf.probes.prober import Prober
    from lrbs_tf.probes.settings import ProbeSettings

    tick, n = time.time(), len(trainer.y)
    probe_settings = ProbeSettings(
        examples=min(settings.probe_examples, n),
        noise_examples=min(settings.noise_examples, settings.probe_examples, n),
        finite_difference=False,
        trace_matvecs=9,
        frobenius_samples=3,
        lanczos_tol=1e-2,  # two digits are all a verdict at η·λ_step = 2 or 3.7 needs
        seed=plan.orders[0],
    )
    trainer.restore()
    prober = Prober(
        trainer.model, trainer.x, trainer.y, probe_settings, loss=loss, step_batch=plan.batch0
    )
    full = prober(lr=plan.lr0)
    sharpness = {plan.batch0: full["step_sharpness"]}
    for k in plan.factors[1:]:
        sharpness[k * plan.batch0] = prober.step_sharpness_at(k * plan.batch0)["step_sharpness"]
        say(f"θ0 probed at S = {k * plan.batch0}: step sharpness {sharpness[k * plan.batch0]:.4g}")
    probe = dict(
        full,
        step_sharpness_by_batch={str(s): v for s, v in sharpness.items()},
        settings=prober.describe(),
        seconds=time.time() - tick,
    )
    say(
        f"θ0: B_simple {full['b_simple']:.4g} ± {full['b_simple_stderr']:.2g}, width "
        f"sharpness {full['width_sharpness']:.4g} ({probe['seconds']:.0f} s)"
    )
    files.write_json(folder.file("probe.json"), probe)
    trainer.restore()
    return probe


def train_branches(folder, trainer, plan: Plan, say) -> dict:
    """Every branch in turn (finished ones reused), with progress and an estimate of the time
    left from the branches trained so far; name → record."""
    from lrbs_tf.scaling.hparams import write_experiment, write_session

    write_experiment(folder.file(os.path.join("tb", "hparams")))
    records, clock = {}, Clock()
    for i, spec in enumerate(plan.branches):
        record = folder.record(spec.name)
        if record is not None:
            records[spec.name] = record
            continue
        say(f"[{i + 1}/{len(plan.branches)}] {describe(spec)}{clock.left(plan, spec, records)}")
        record = dict(
            trainer.run(spec, folder.tb(spec.name)), spec=vars(spec) | {"ratio": spec.ratio}
        )
        write_session(folder.tb(spec.name), spec)
        folder.save(spec.name, record)
        records[spec.name] = record
        clock.add(spec, record)
        last = record["points"][-1]
        say(
            f"      loss {last['loss']:.4g} after {last['examples']} examples, "
            f"{record['steps']} steps, {record['train_seconds']:.1f} s"
        )
    return records


def describe(spec) -> str:
    what = {
        "base": f"base, data order {spec.order}",
        "svag": f"SVAG ℓ = {spec.ell}",
        "rule": f"{spec.rule} k = {spec.k}",
    }[spec.kind]
    return f"{what}: η = {spec.lr:.4g}, S = {spec.batch}, {spec.steps} steps"


class Clock:
    """The time left, from the branches trained in this session: seconds ≈ a·steps +
    b·examples + c·points (non-negative least squares), an estimate that sharpens as
    branches of other sizes finish."""

    def __init__(self):
        self.tick, self.rows, self.seconds = time.time(), [], []

    @staticmethod
    def features(spec, points: int) -> list[float]:
        per_step = spec.batch * (2 if spec.kind == "svag" else 1)
        return [spec.steps, spec.steps * per_step, points]

    def add(self, spec, record) -> None:
        self.rows.append(self.features(spec, len(record["points"])))
        self.seconds.append(record["wall_seconds"])

    def left(self, plan: Plan, current, records: dict) -> str:
        elapsed = f" (elapsed {(time.time() - self.tick) / 60:.1f} min"
        if not self.rows:
            return elapsed + ")"
        from scipy.optimize import nnls

        coef = nnls(np.array(self.rows, float), np.array(self.seconds, float))[0]
        todo = [b for b in plan.branches if b.name not in records]
        left = sum(float(np.dot(coef, self.features(b, len(plan.points)))) for b in todo)
        return elapsed + f", about {max(left, 0) / 60:.1f} min left)"


def write_outputs(folder, plan: Plan, report: dict) -> None:
    """``scaling.json`` (everything), ``scaling.csv`` (one row per branch), ``scaling.png``."""
    from lrbs_tf.scaling.figure import draw

    rows = table_rows(report)
    report["csv"] = folder.file("scaling.csv")
    report["png"] = draw(report, folder.file("scaling.png"))
    files.write_csv(report["csv"], rows, list(rows[0]))
    files.write_json(folder.file("scaling.json"), report)

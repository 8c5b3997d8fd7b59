"""Probe the curvature and gradient noise of a saved run: λ_max, Tr H, ‖H‖_F, B_simple.

    python tools/probe.py runs/mlp-fashion_mnist-lr0.005-bs640-seed0 [--examples 5000]
        [--bn inference|batch] [--dtype float32|float64] [--json]

Loads ``model.keras`` and ``config.json`` from the run folder, rebuilds the same training split
(same data source, seed and sizes), measures on a fixed, seeded subset of the training set,
prints the values and writes them with every setting to ``<run>/probe.json``. While it probes
it holds the run folder's lock shared (other probes may run, training or ``--overwrite`` of that
run may not), and it checks that it can write ``probe.json`` (and that the disk has room) before
it starts; a run still training is busy (status 75). Ctrl-C stops it with status 130 and writes
nothing.

A run folder is data, never code: ``model.keras`` is loaded without importing anything; the
builder ``config.json`` names is imported only when the model has custom layers, and only if
its source file still has the SHA-256 the folder recorded (``--trust-code`` imports it anyway).
"""

from __future__ import annotations

import json
import logging
import os
import time

from lrbs_tf import files
from lrbs_tf.cli.common import (
    EXIT_BUSY,
    EXIT_DISK_FULL,
    ArgumentParser,
    command,
    fail,
    program,
    quiet_tensorflow,
    reported_errors,
    setup_logging,
)
from lrbs_tf.probes.settings import ProbeSettings
from lrbs_tf.progress import duration, stage
from lrbs_tf.settings import ConfigError, add_flags, values_from

PROG = program("probe.py")
log = logging.getLogger("lrbs_tf")


def parse(argv=None):
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    names = add_flags(
        p,
        ProbeSettings,
        names=(
            "examples",
            "noise_examples",
            "batch_size",
            "bn_mode",
            "dtype",
            "seed",
            "finite_difference",
            "step_batch_size",
            "rel_error",
            "max_seconds",
        ),
    )
    p.add_argument(
        "--density",
        action="store_true",
        help="also the spectral density by stochastic Lanczos quadrature "
        "(10 runs × 80 steps), plotted to <run>/spectral_density.png",
    )
    p.add_argument(
        "--compare-c",
        action="store_true",
        help="also compare the gradient covariance C with H (Tr C/Tr H, overlap of "
        "their top-5 eigenvector subspaces); holds --noise-examples per-example gradients in "
        "memory, 8 bytes per parameter each: 3.2 GB for 1000 examples of the MLP (8.3 GB "
        "peak measured), so lower --noise-examples on a small machine",
    )
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.add_argument(
        "--trust-code",
        action="store_true",
        help="import the builder the run folder names even when its source file no longer "
        "has the sha256 the folder recorded (only for code you trust: a run folder from "
        "elsewhere can name any file)",
    )
    return p.parse_args(argv), names


def open_run(args, names) -> tuple[dict, ProbeSettings]:
    """The run's config.json and the probe settings, checked, with the run folder locked
    (shared) and ``probe.json`` writable; exits with a one-line message otherwise."""
    from lrbs_tf.training import folder

    try:
        saved, results = read_finished(args.run_dir)
        saved = dict(saved, results=results)
        model_path = os.path.join(args.run_dir, "model.keras")
        if not files.check_entry(model_path):
            fail(PROG, f"{model_path} is missing")
        config = saved["config"]
        settings = ProbeSettings(**values_from(args, names)).validate(
            config["num_train"], prefix=""
        )
        files.check_entry(os.path.join(args.run_dir, "probe.json"))
        files.check_entry(os.path.join(args.run_dir, "spectral_density.png"))
        writable(args.run_dir)
        folder.lock(args.run_dir, shared=True)
    except folder.RunBusyError as e:
        fail(PROG, e, status=EXIT_BUSY)
    except (files.FileProblem, ConfigError, KeyError, TypeError) as e:
        fail(PROG, e if not isinstance(e, KeyError) else f"config.json lacks {e}")
    except OSError as e:
        full = folder.disk_full(e)
        fail(
            PROG,
            f"cannot write in {args.run_dir} ({e.strerror or e})"
            + ("; free some space and probe again" if full else ""),
            status=EXIT_DISK_FULL if full else 1,
        )
    read_finished(args.run_dir)  # again, locked
    return saved, settings


def read_finished(run_dir: str) -> tuple[dict, dict]:
    """The run's config and results if it ended; a run still training is busy
    (:class:`~lrbs_tf.training.folder.RunBusyError`, status 75)."""
    from lrbs_tf.training import folder

    try:
        return folder.read_run(run_dir, ("finished", "diverged", "interrupted"))
    except folder.RunFolderError as problem:
        try:
            results = folder.read_json(os.path.join(run_dir, "results.json"))
        except folder.RunFolderError:
            raise problem from None
        if isinstance(results, dict) and results.get("status") == "running":
            folder.lock(run_dir, shared=True)  # RunBusyError while it trains
            folder.unlock(run_dir)
            raise folder.RunFolderError(
                f"{run_dir} was stopped while it trained (status 'running'): run its command "
                "again to finish it, then probe it"
            ) from None
        raise


PROBE_FILE_BYTES = 1 << 20  # room for probe.json and the density plot


def writable(folder: str) -> None:
    """Raise OSError unless ``folder`` takes a new file of :data:`PROBE_FILE_BYTES` (checked
    before the probe runs, so that minutes of probing are never lost to a folder we cannot
    write or a full disk)."""
    path = os.path.join(folder, f".tmp-probe-{os.getpid()}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, bytes(PROBE_FILE_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(path)


def measure(args, saved: dict, settings: ProbeSettings) -> dict:
    """Load the model and the run's training data, probe, and (if asked) the spectral density
    and C against H."""
    config = saved["config"]
    model, data = load(args, saved)
    tick = time.time()
    measured, prober = probe_figures(model, data, config, settings)
    if saved.get("results", {}).get("measured_model"):  # the run's own warning, repeated
        measured["measured_model"] = saved["results"]["measured_model"]
    if args.density:
        measured.update(density(args, config, prober, measured))
    if args.compare_c:
        from lrbs_tf.probes.noise import compare_with_hessian

        log.info(
            "C against H: per-example gradients of %d examples held in memory (%.1f GiB)",
            settings.noise_examples,
            settings.noise_examples * prober.op.dim * 8 / 2**30,
        )
        measured["c_vs_h"] = compare_with_hessian(
            prober.noise_op, k=5, max_examples=settings.noise_examples, trace_h=None, seed=args.seed
        )
    measured["total_seconds"] = time.time() - tick  # probes, density and C vs H
    return measured


def load(args, saved: dict):
    """``(model, data)`` of the run folder (a run folder is data, never code), checked to be
    the data the run trained on; exits with a one-line message otherwise."""
    from lrbs_tf.data.datasets import load_for
    from lrbs_tf.models.registry import ModelFileError, load_run_model
    from lrbs_tf.models.sources import ModelError

    config = saved["config"]
    model_path = os.path.join(args.run_dir, "model.keras")
    try:
        model = load_run_model(args.run_dir, config, trust_code=args.trust_code)
    except ModelFileError as e:
        fail(PROG, f"cannot load {e}")
    except ModelError as e:
        fail(PROG, e)
    except Exception as e:  # a file from another Keras/lrbs_tf version, or damaged
        first = (str(e).splitlines() or [""])[0][:200]
        fail(PROG, f"cannot load {model_path} as a Keras model ({type(e).__name__}: {first})")
    data = load_for(config)
    if data.info["train_fingerprint"] != saved["data"]["train_fingerprint"]:
        fail(PROG, "the training data differ from the run's (fingerprints do not match)")
    return model, data


def probe_figures(model, data, config: dict, settings: ProbeSettings):
    """``(figures, the last Prober)``: one probe, or as many as ``--rel-error`` /
    ``--max-seconds`` take (:mod:`lrbs_tf.probes.budget`)."""
    import keras

    from lrbs_tf.probes.prober import Prober

    built = {}

    def make(chosen):
        built["last"] = Prober(
            model, data.train.x, data.train.y, chosen, step_batch=config["batch_size"]
        )
        return built["last"]

    if settings.rel_error is None and settings.max_seconds is None:
        measured = make(settings)(lr=config["lr"])
    else:
        from lrbs_tf.probes import budget

        measured = budget.measure(make, settings, len(data.train), config["lr"])
    measured["settings"] = built["last"].describe()
    measured["batchnorm"] = any(
        isinstance(layer, keras.layers.BatchNormalization) for layer in model._flatten_layers()
    )
    return measured, built["last"]


def density(args, config: dict, prober, measured: dict) -> dict:
    """The stochastic-Lanczos spectral density (its plot is drawn by :func:`write`)."""
    from lrbs_tf.probes import spectral

    what = f"spectral density: 10 runs × 80 Lanczos steps on {prober.settings.examples} examples"
    tick = time.time()

    def after_run(done: int, runs: int) -> None:
        if done == 1:  # the others cost what the first did
            took = time.time() - tick
            log.info(
                "spectral density: run 1 of %d took %s, about %s more",
                runs,
                *map(duration, (took, took * (runs - 1))),
            )

    with stage(what):  # timed after its first run: the Lanczos work is not the HVPs' alone
        found = spectral.slq_density(
            prober.op.matvec, prober.op.dim, runs=10, steps=80, seed=args.seed, after_run=after_run
        )
    return {
        "spectral_density": {
            "nodes": found.nodes.tolist(),
            "weights": found.weights.tolist(),
            "trace_estimate": found.trace(prober.op.dim),
        },
        "_density": found,
    }


def write(run_dir: str, config: dict, measured: dict) -> None:
    """probe.json, and the spectral-density plot (removed when this probe has none: an
    earlier one would no longer match probe.json)."""
    png = os.path.join(run_dir, "spectral_density.png")
    found = measured.pop("_density", None)
    if found is None:
        files.remove(png)
    else:
        from lrbs_tf.figures.plots import spectral_density_plot

        measured["spectral_density_png"] = spectral_density_plot(
            found,
            png,
            f"Hessian spectral density (SLQ), η/S = {config['lr']:g}/{config['batch_size']}",
        )
    files.write_json(os.path.join(run_dir, "probe.json"), measured)


@command(PROG)
def main(argv=None):
    args, names = parse(argv)
    setup_logging()
    saved, settings = open_run(args, names)
    quiet_tensorflow()
    from lrbs_tf.training import signals

    with reported_errors(PROG, args.run_dir), signals.graceful():
        try:
            measured = measure(args, saved, settings)
            signals.raise_if_received()  # a Ctrl-C that TensorFlow swallowed on its way
        except BaseException as e:
            stop = e if isinstance(e, KeyboardInterrupt) else signals.received()
            if stop is None:
                raise
            fail(PROG, "interrupted: nothing written", status=signals.exit_status(stop))
        with signals.deferred():
            write(args.run_dir, saved["config"], measured)
    if args.json:
        print(json.dumps(files.jsonable(measured), indent=2))
    else:
        report(args.run_dir, saved["config"], settings, measured)
    return 0


def report(run_dir: str, config: dict, settings: ProbeSettings, measured: dict) -> None:
    lr, bn = config["lr"], measured.get("batchnorm", True)
    print(f"run         {run_dir}  (η/S = {lr:g}/{config['batch_size']})")
    from lrbs_tf.cli.run import fd_text
    from lrbs_tf.probes.sampling import text

    print(
        f"sharpness   width {text(measured, 'width_sharpness', 5)} ("
        + (f"BatchNorm {settings.bn_mode}; " if bn else "")
        + f"Lanczos {measured['lanczos_matvecs']} HVPs, converged "
        f"{all(measured['lanczos_converged'])}); step {text(measured, 'step_sharpness', 5)} "
        + (f"(BatchNorm over batches of {measured['step_batch_size']})" if bn else "")
        + (f"(S = {measured['step_batch_size']})" if not bn else "")
        + f" against 2/η = {2 / lr:.5g}: η·λ_step = {lr * measured['step_sharpness']:.3g}"
    )
    if measured.get("measured_model"):
        print(f"warning     {measured['measured_model']}")
    print(f"Tr H        {text(measured, 'trace', 5)}  (Hutch++)")
    print(
        f"‖H‖_F       {text(measured, 'frobenius', 5)}  (Hutchinson)"
        + (f"; {fd_text(measured)}" if "frobenius_fd" in measured else "")
    )
    print(
        f"noise       Tr C {text(measured, 'trace_c', 5)}, |g|² {text(measured, 'grad_norm_sq')}, "
        f"B_simple {text(measured, 'b_simple', 5)} ({measured['noise_method']})"
    )
    print(
        f"errors      ± is the standard error over the choice of probe examples (a jackknife "
        f"over {measured.get('sampling_groups', '?')} groups) and the estimators' random vectors"
    )
    if "c_vs_h" in measured:
        c = measured["c_vs_h"]
        print(
            f"C vs H      Tr C/Tr H = {c['trace_c_over_trace_h']:.3g}, top-{c['k']} subspace "
            f"overlap {c['top_k_overlap']:.3g} (random: {c['random_overlap_baseline']:.1g})"
        )
    if "spectral_density_png" in measured:
        print(f"density     {measured['spectral_density_png']}")
    if "budget" in measured:
        from lrbs_tf.probes.budget import budget_note

        b = measured["budget"]
        passes = " → ".join(str(p["examples"]) for p in b["passes"])
        print(
            f"budget      examples {passes}; "
            + ("every figure within the target" if b["reached"] else budget_note(b))
        )
    print(
        f"settings    {measured['settings']['num_examples']} examples, BN {settings.bn_mode}, "
        f"{settings.dtype}; probes {measured['seconds']:.1f} s, "
        f"{measured['total_seconds']:.1f} s in all"
    )
    print(f"wrote       {os.path.join(run_dir, 'probe.json')}")

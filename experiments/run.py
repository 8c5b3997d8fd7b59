"""Train one model at a chosen learning-rate-to-batch-size ratio η/S.

    python experiments/run.py --ratio 0.005/640               # η = 0.005, S = 640
    python experiments/run.py --ratio 7.8125e-6 --batch-size 640
    python experiments/run.py --lr 0.1 --batch-size 100 --epochs 5
    python experiments/run.py --rescale linear --base 0.1/50 --batch-size 400   # η = 0.8
    python experiments/run.py --lr 0.005 --bs-schedule cyclic:640,128:4 --epochs 16
    python experiments/run.py --batch-size 128 --lr-schedule cyclic:0.001,0.005:4 --epochs 16
    python experiments/run.py --ratio 0.005/640 --strategy mirrored --devices /gpu:0,/gpu:1
    python tools/launch_workers.py -n 2 -- experiments/run.py --ratio 0.005/640

Schedules (``--lr-schedule``, ``--bs-schedule``, ``--ratio-schedule``) are written in epochs;
see ``lrbs_tf/schedules.py`` for the syntax. A batch-size schedule keeps η fixed unless
``--keep-ratio`` (then η = (η0/S0)·S(t)); ``--grow-batch`` turns a decaying η schedule into a
growing S with the same η/S. Under ``--strategy mirrored|multiworker`` S is the global batch
(summed over replicas and workers); see the README's "Several devices and machines".

Default: the paper's 4-layer batch-normalised MLP on Fashion-MNIST (50000 train / 10000
validation / 10000 test), 3 epochs. Repeating a command resumes a stopped run from its last
checkpoint (or just prints a finished run); Ctrl-C saves the state and exits with status 130. Writes ``runs/<name>/`` with ``config.json``,
``results.json``, ``model.keras`` and TensorBoard events (``tb/``).

Measured on 2 CPU cores: ``--ratio 0.005/640`` (3 epochs) takes 15 s in all and reaches 78.0 %
test accuracy; ``--ratio 0.1/100 --epochs 5`` 18 s and 87.3 %; ``--probe`` adds about 30 s.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lrbs_tf.cli import (ArgumentParser, add_distribute_flags, distribute_kwargs,  # noqa: E402
                         fail, quiet_tensorflow, reported_errors)
from lrbs_tf.config import ConfigError, ProbeSettings, RunConfig, base_ratio  # noqa: E402
from lrbs_tf.ratio import RatioError  # noqa: E402

PROG = "run.py"


def parse_args(argv=None):
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    g = p.add_argument_group("η/S")
    g.add_argument("--ratio", help="LR/BATCH (e.g. 0.005/640), or a bare η/S with --batch-size")
    g.add_argument("--lr", help="learning rate η (with --batch-size)")
    g.add_argument("--batch-size", help="batch size S")
    g.add_argument("--rescale", help="move --base to --batch-size: linear, sqrt, none or a power p")
    g.add_argument("--base", help="base recipe LR/BATCH for --rescale, e.g. 0.1/50")
    g.add_argument("--lr-schedule", help="η schedule, e.g. cyclic:0.001,0.005:4")
    g.add_argument("--bs-schedule", help="S schedule, e.g. cyclic:640,128:4")
    g.add_argument("--ratio-schedule", help="η/S schedule, e.g. milestones:1e-3@10,20")
    g.add_argument("--keep-ratio", action="store_true",
                   help="with --bs-schedule: η follows S so that η/S stays η0/S0")
    g.add_argument("--grow-batch", action="store_true",
                   help="with --lr-schedule: grow S instead of decaying η (same η/S)")
    p.add_argument("--epochs", type=int, default=3, help="epochs (the cap with --loss-target)")
    p.add_argument("--loss-target", type=float,
                   help="stop once an epoch's mean training loss is at most this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--momentum", type=float, default=0.0, help="SGD momentum (paper: 0)")
    p.add_argument("--model", default="mlp", help="mlp, vgg11 or resnet56")
    p.add_argument("--width", type=int, default=256, help="hidden width of the MLP")
    p.add_argument("--dataset", default="fashion_mnist",
                   help="fashion_mnist, cifar10 (needs --data-dir or tensorflow-datasets) or "
                        "cifar10_synthetic (a generated stand-in)")
    p.add_argument("--augment", action="store_true",
                   help="4-pixel shifts and horizontal flips (CIFAR-10)")
    p.add_argument("--data-dir", help="folder with the idx .gz files (else $LRBS_DATA_DIR, "
                   "/usr/share/datasets/fashion-mnist, tensorflow-datasets)")
    p.add_argument("--validation-size", type=int, help="held out of the training set (default: 10000 Fashion-MNIST, 5000 CIFAR-10)")
    p.add_argument("--train-size", type=int, help="train on a seeded subset of this size")
    p.add_argument("--logdir", default="runs", help="parent folder of run folders")
    p.add_argument("--name", help="run folder name (default: from model, data, η, S, seed)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--resume", action="store_true",
                   help="insist on resuming (the same command resumes a stopped run anyway)")
    p.add_argument("--deterministic", action="store_true",
                   help="TensorFlow op determinism: bitwise-repeatable (and resumable) runs; "
                        "turns XLA off")
    p.add_argument("--checkpoint-steps", type=int, default=0, metavar="K",
                   help="also checkpoint every K steps inside an epoch (default: epoch ends)")
    g = p.add_argument_group("curvature probes (λ_max, Tr H, ‖H‖_F, B_simple)")
    g.add_argument("--probe", action="store_true",
                   help="measure curvature and gradient noise at the end of training")
    g.add_argument("--probe-every", type=int, default=0, metavar="K",
                   help="also every K epochs during training (TensorBoard probe/*)")
    g.add_argument("--probe-examples", type=int, default=5000)
    g.add_argument("--probe-noise-examples", type=int, default=1000)
    g.add_argument("--probe-batch-size", type=int, default=1000)
    g.add_argument("--probe-bn", default="inference", help="inference | batch")
    g.add_argument("--probe-dtype", default="float32", help="float32 | float64")
    g.add_argument("--probe-seed", type=int, default=0)
    p.add_argument("--jit", default="auto", choices=("auto", "on", "off"),
                   help="XLA compilation (auto: on without a distribution strategy)")
    p.add_argument("--steps-per-execution", type=int,
                   help="train steps per tf.function call (default: about 512 examples per "
                        "call, at most 32 steps)")
    add_distribute_flags(p)
    args = p.parse_args(argv)
    try:
        ratio = base_ratio(args.ratio, args.lr, args.batch_size, args.rescale, args.base,
                           args.lr_schedule, args.bs_schedule, args.ratio_schedule)
        config = RunConfig(
            lr=ratio.lr, batch_size=ratio.batch_size, epochs=args.epochs, seed=args.seed,
            dataset=args.dataset, data_dir=args.data_dir, validation_size=args.validation_size,
            train_size=args.train_size, model=args.model, width=args.width,
            momentum=args.momentum, logdir=args.logdir, name=args.name,
            jit_compile=args.jit, steps_per_execution=args.steps_per_execution,
            overwrite=args.overwrite, lr_schedule=args.lr_schedule,
            bs_schedule=args.bs_schedule, ratio_schedule=args.ratio_schedule,
            keep_ratio=args.keep_ratio, grow_batch=args.grow_batch,
            probe=probe_settings(args), probe_every=args.probe_every,
            deterministic=args.deterministic, checkpoint_steps=args.checkpoint_steps,
            resume=args.resume, loss_target=args.loss_target, augment=args.augment,
            **distribute_kwargs(args)).validate()
    except (RatioError, ConfigError) as e:
        fail(PROG, e)
    return config


def probe_settings(args):
    if not (args.probe or args.probe_every):
        return None
    return ProbeSettings(examples=args.probe_examples, noise_examples=args.probe_noise_examples,
                         batch_size=args.probe_batch_size, bn_mode=args.probe_bn,
                         dtype=args.probe_dtype, seed=args.probe_seed)


def _chief() -> bool:
    from lrbs_tf.distribute import chief_task

    return chief_task()


def summary(results: dict, config: RunConfig) -> str:
    run_dir = results["run_dir"]
    lines = [
        "",
        f"run        {config.run_name}",
        f"η/S        {config.lr:g}/{config.batch_size} = {config.ratio:.6g}"
        + "".join(f", {k.replace('_', ' ')} {v}" for k, v in config.plan().describe().items()
                  if config.lr_schedule or config.bs_schedule or config.ratio_schedule),
        f"status     {results['status']}"
        + (f" (non-finite loss in epoch {results['diverged_epoch']})" if results["diverged"] else ""),
    ]
    if results.get("final_test_accuracy") is not None:
        lines += [
            f"test acc   {results['final_test_accuracy']:.4f} final, "
            f"{results['test_accuracy_at_best']:.4f} at best validation epoch "
            f"{results['best_epoch']}",
            f"val acc    {results['final_validation_accuracy']:.4f} final, "
            f"{results['best_validation_accuracy']:.4f} best",
            f"train loss {results['final_train_loss']:.4f}",
        ]
    if results.get("examples_per_second"):
        lines.append(f"speed      {results['examples_per_second']:,.0f} examples/s, "
                     f"{results['wall_time']:.1f} s in all")
    probe = results.get("probe")
    if probe:
        lines.append(f"curvature  λ_max {probe['lambda_max']:.4g} (2/η = "
                     f"{probe.get('stability_2_over_lr', float('nan')):.4g}), Tr H "
                     f"{probe['trace']:.4g} ± {probe['trace_stderr']:.2g}, ‖H‖_F "
                     f"{probe['frobenius']:.4g} (finite diff. {probe.get('frobenius_fd', float('nan')):.4g})")
        lines.append(f"noise      Tr C {probe['trace_c']:.4g}, |g|² {probe['grad_norm_sq']:.3g}, "
                     f"B_simple {probe['b_simple']:.4g} (on {probe['noise_num_examples']} "
                     f"examples, {probe['seconds']:.0f} s)")
    where = results.get("distribute")
    if where and where["replicas"] > 1:
        lines.append(f"devices    {where['strategy']}, {where['replicas']} replicas"
                     + (f", task {where['task']}" if "task" in where else "")
                     + f"; weights sha1 {results['weights_sha1'][:16]}")
    if results.get("chief", True):
        lines += [f"folder     {run_dir}",
                  f"view       tensorboard --logdir {os.path.join(run_dir, 'tb')}"]
    else:
        lines.append(f"folder     written by the chief: {config.run_dir}")
    return "\n".join(lines)


def main(argv=None) -> int:
    config = parse_args(argv)
    from lrbs_tf import runfolder

    with reported_errors(PROG, config.logdir):
        # The run folder is checked and locked before TensorFlow loads, so that a busy,
        # damaged or foreign folder is refused at once (train() takes the same lock again).
        chief = config.strategy != "multiworker" or _chief()
        if chief:
            runfolder.claim(config)
        else:
            runfolder.inspect(config)
    quiet_tensorflow()
    from lrbs_tf.train import train

    with reported_errors(PROG, config.logdir):
        results = train(config)
    print(summary(results, config))
    return 0


if __name__ == "__main__":
    sys.exit(main())

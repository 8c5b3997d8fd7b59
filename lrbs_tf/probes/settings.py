"""What the curvature and gradient-noise probes measure, and on how many examples. Pure Python."""

from __future__ import annotations

import dataclasses

from lrbs_tf.settings import ConfigError, between, check_fields, optional, positive, setting

BN_MODES = ("inference", "batch")
DTYPES = ("float32", "float64")
METHODS = ("rr", "fr")  # reverse-over-reverse, forward-over-reverse
PROBE_GROUP = "curvature probes (λ_max, Tr H, ‖H‖_F, B_simple)"
# The least time a probe limited by a share of the training time gets: below it, a pilot and
# its tracing leave too few examples for any figure to mean much.
MIN_SECONDS = 10.0
# run.py's share of the training time for a final probe given no size, error or time limit.
DEFAULT_TIME_SHARE = 1.0


@dataclasses.dataclass
class ProbeSettings:
    """What the curvature and gradient-noise probes measure, and on how many examples."""

    examples: int = setting(
        5000,
        "probe examples: a fixed, seeded subset of the training set (the default is cut to a "
        "smaller training set)",
        check=between(1, 10**7),
        group=PROBE_GROUP,
    )
    batch_size: int = setting(
        1000,
        "examples per Hessian-vector product batch (memory only)",
        check=between(1, 10**6),
        group=PROBE_GROUP,
    )
    bn_mode: str = setting(
        "inference",
        "BatchNorm statistics: the moving averages (inference) or each probe batch's own (batch)",
        choices=BN_MODES,
        flag="--bn",
        group=PROBE_GROUP,
    )
    dtype: str = setting("float32", "precision of the probes", choices=DTYPES, group=PROBE_GROUP)
    method: str = setting(
        "rr",
        "Hessian-vector products: reverse-over-reverse or forward-over-reverse",
        choices=METHODS,
        cli=False,
    )
    top_k: int = setting(1, "eigenvalues from the top", check=between(1, 1000), cli=False)
    lanczos_tol: float = setting(
        1e-3, "relative Ritz residual to stop Lanczos", check=positive, cli=False
    )
    lanczos_max_steps: int = setting(
        100, "Lanczos steps at most", check=between(1, 10**4), cli=False
    )
    trace_matvecs: int = setting(
        99, "Hessian-vector products for Tr H (Hutch++)", check=between(1, 10**5), cli=False
    )
    frobenius_samples: int = setting(30, "samples for ‖H‖_F", check=between(1, 10**5), cli=False)
    finite_difference: bool = setting(
        True, "skip the paper's finite-difference ‖H‖_F", flag="--no-finite-difference", cli=False
    )
    fd_eps: float = setting(
        1e-3, "step ε of the finite-difference ‖H‖_F", check=positive, cli=False
    )
    groups: int = setting(
        8,
        "disjoint groups of the probe examples for the sampling errors (a jackknife, "
        "lrbs_tf.probes.sampling)",
        check=between(1, 1000),
        cli=False,
    )
    noise_examples: int = setting(
        1000,
        "probe examples whose per-example gradient norms give Tr C and B_simple",
        check=between(2, 10**7),
        group=PROBE_GROUP,
    )
    step_batch_size: int | None = setting(
        None,
        "batch size S of the step sharpness, whose BatchNorm statistics are those of mini-batches "
        "of S (default: the run's batch size)",
        kind=int,
        check=optional(between(1, 10**7)),
        group=PROBE_GROUP,
    )
    rel_error: float | None = setting(
        None,
        "probe again on more examples until every figure's relative standard error is below "
        "this (e.g. 0.1), up to the training set or --probe-max-seconds",
        kind=float,
        check=optional(positive),
        group=PROBE_GROUP,
    )
    max_seconds: float | None = setting(
        None,
        "spend at most this long on a probe: a pilot on 64 examples, then as many as fit",
        kind=float,
        check=optional(positive),
        group=PROBE_GROUP,
    )
    time_share: float | None = setting(
        None,
        "spend at most this multiple of the training time on the final probe (at least "
        f"{MIN_SECONDS:g} s): one full pass planned from the training's speed, or a light pilot "
        "on 64 examples then as many as fit, up to --probe-examples; "
        "run.py's default is 1 when no probe size, error or time limit is given (0: the "
        "probe sizes whatever they cost)",
        kind=float,
        check=optional(lambda v: None if v >= 0 else "must be at least 0"),
        group=PROBE_GROUP,
        identity=False,
    )
    seed: int = setting(
        0,
        "seed of the probe subset and the random vectors",
        check=between(0, 2**31 - 1),
        group=PROBE_GROUP,
    )

    def validate(self, num_train: int, prefix: str = "probe-") -> ProbeSettings:
        check_fields(self, prefix)
        defaults = ProbeSettings.__dataclass_fields__
        if self.examples == defaults["examples"].default:  # a default fits any training set
            self.examples = min(self.examples, num_train)
        if self.noise_examples == defaults["noise_examples"].default:
            self.noise_examples = min(self.noise_examples, self.examples)
        if self.examples > num_train:
            raise ConfigError(
                f"--{prefix}examples must be between 1 and the training set size "
                f"({num_train}), got {self.examples}"
            )
        if self.time_share and (self.rel_error is not None or self.max_seconds is not None):
            raise ConfigError(
                f"--{prefix}time-share is a budget of its own: give it, --{prefix}rel-error or "
                f"--{prefix}max-seconds, not both"
            )
        if self.noise_examples > self.examples:
            raise ConfigError(
                f"--{prefix}noise-examples must be between 2 and "
                f"--{prefix}examples ({self.examples}), got {self.noise_examples}"
            )
        return self

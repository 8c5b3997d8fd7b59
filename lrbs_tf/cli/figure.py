"""The one skeleton of the figure commands (``lrbs-fig1``, ``-fig2``, ``-fig4``, ``-fig5``,
``lrbs-stability``): flags → the figure's run settings → quiet TensorFlow → its runs, with
errors as one line → on the chief, its table on stdout. A figure module gives the four parts
that differ (:class:`Figure`) and its ``main`` calls :func:`figure_main`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from lrbs_tf.cli.common import (
    DEVICES,
    SHARED,
    ArgumentParser,
    add_run_flags,
    add_verbose_flag,
    fail,
    quiet_tensorflow,
    reported_errors,
    say,
    setup_logging,
)
from lrbs_tf.core.ratio import RatioError
from lrbs_tf.settings import ConfigError


@dataclasses.dataclass
class Figure:
    """What a figure command adds to the skeleton.

    ``flags(parser)`` adds its own flags; ``configs(args)`` returns its run settings (raising
    ``ConfigError``, ``RatioError`` or ``ValueError`` for bad flags); ``run(configs, args, say,
    progress)`` trains and measures, returning the report (None on a worker other than the
    chief); ``show(report, args)`` prints the table. ``epochs`` and ``logdir`` are the command's
    defaults; ``run_flags`` the RunConfig settings it takes as flags.
    """

    prog: str
    doc: str
    flags: Callable
    configs: Callable
    run: Callable
    show: Callable
    epochs: int | None = None
    logdir: str | None = None
    run_flags: tuple = SHARED + DEVICES


def figure_main(figure: Figure, argv=None) -> int:
    """Run ``figure`` as a command: exit status 0, or one line on stderr and status 2 for bad
    flags (:func:`lrbs_tf.cli.common.reported_errors` for the rest)."""
    p = ArgumentParser(prog=figure.prog, description=figure.doc.split("\n\n")[0])
    add_run_flags(p, epochs=figure.epochs, logdir=figure.logdir, names=figure.run_flags)
    figure.flags(p)
    add_verbose_flag(p)
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    try:
        configs = figure.configs(args)
    except (ConfigError, RatioError, ValueError) as e:
        fail(figure.prog, e)
    quiet_tensorflow()
    with reported_errors(figure.prog, args.logdir):
        report = figure.run(configs, args, say, "bar" if args.verbose else "epoch")
    if report is None:
        say("this worker's part is done; the chief (worker 0) writes the tables and figures")
        return 0
    print()
    figure.show(report, args)
    return 0

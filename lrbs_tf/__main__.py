"""``python -m lrbs_tf COMMAND [flags]``: the same commands as the ``lrbs-*`` entry points."""

import importlib
import sys

COMMANDS = {
    "run": "train one model at a chosen η/S",
    "probe": "curvature and gradient noise of a saved run",
    "advise": "what another batch size would do to a finished run",
    "tune": "search η/S with keras-tuner",
    "fig1": "paper Fig. 1: cyclic batch size vs cyclic learning rate",
    "fig2": "paper Fig. 2: rescaling rules",
    "fig3": "paper Fig. 3: η/S against curvature and accuracy at minima",
    "fig4": "paper Fig. 4: the loss between minima",
    "fig5": "paper Fig. 5: the breakdown for large β",
    "theory": "the SDE theory checked on quadratics",
    "stability": "the stability advisor checked against what SGD does",
    "scale": "how far η/S carries: branches from one checkpoint at k× the batch",
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--version"]:
        from lrbs_tf import __version__

        sys.stdout.write(f"lrbs_tf {__version__}\n")
        return 0
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = [f"  {name:{width}}  {what}" for name, what in COMMANDS.items()]
        text = "usage: python -m lrbs_tf [--version] COMMAND [flags]   (COMMAND --help: its "
        text += "flags)\n\n"
        text += "commands:\n" + "\n".join(lines) + "\n"
        if argv and argv[0] not in ("-h", "--help"):
            sys.stderr.write(f"lrbs_tf: error: unknown command {argv[0]!r}\n\n" + text)
            return 2
        sys.stdout.write(text)
        return 0 if argv else 2
    sys.argv[0] = f"lrbs_tf {argv[0]}"  # the name its messages use
    module = importlib.import_module(f"lrbs_tf.cli.{argv[0]}")
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())

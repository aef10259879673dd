"""The ``scratchadv`` command: argument parsing only; the work is done by the modules.

Each sub-command is a pair ``_add_<name>(parser)`` / ``_run_<name>(args)`` registered
with ``@command``. Errors in the user's input (``ValueError``, ``TypeError``,
``DataError``, ``CheckpointError``) become one line on stderr and exit status 2.
"""
import argparse
import sys

from . import __version__

_COMMANDS = {}


def command(name, help):
    """Register ``add(parser)`` under ``name``; the run function is attached with ``.run``."""
    def deco(add):
        def run_deco(run):
            _COMMANDS[name] = (help, add, run)
            return run
        add.run = run_deco
        return add
    return deco


class UsageError(ValueError):
    """A bad command-line value (reported like argparse errors: one line, exit 2)."""


def _floats(text):
    """'0,0.05,0.1' -> [0.0, 0.05, 0.1]."""
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


# ---------------------------------------------------------------------------
# Sub-commands are defined below, one section each.
# ---------------------------------------------------------------------------


def build_parser():
    parser = argparse.ArgumentParser(
        prog="scratchadv",
        description="A CNN from scratch in NumPy + autograd: train it, attack it, defend it.")
    parser.add_argument("--version", action="version", version=f"scratchadv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help, add, _) in _COMMANDS.items():
        add(sub.add_parser(name, help=help, description=help))
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    run = _COMMANDS[args.command][2]
    from .data import DataError
    known = (ValueError, TypeError, DataError)
    try:
        from .checkpoint import CheckpointError
        known = known + (CheckpointError,)
    except ImportError:
        pass
    try:
        return run(args) or 0
    except known as e:
        msg = str(e).strip().splitlines()
        print(f"scratchadv {args.command}: error: {' '.join(m.strip() for m in msg)}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"scratchadv {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

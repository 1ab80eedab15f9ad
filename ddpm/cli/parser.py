"""The top level of `ddpm`: its commands, `--help` and `--version`, and the parser every level uses.

A command line is read in two steps. `build_parser` knows only the command names and their
one-line summaries; the named command's own options come from `ddpm.cli.options`. Neither
imports torch, so every `--help` and `--version` answers at once. Every parser's help ends with
the exit statuses (`ddpm.cli.failures.EXIT_STATUS`).
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable

from ddpm import __version__
from ddpm.cli.failures import EXIT_STATUS

SUMMARIES = {
    "train": "train a model (defaults: the digits preset on the embedded digits data)",
    "sample": "draw samples from a checkpoint",
    "bpd": "evaluate the variational bound in bits/dim",
    "info": "show a checkpoint's step and configuration",
}


SEED_LIMIT = 2**63  # a signed 64-bit integer: within what torch.Generator.manual_seed accepts
# The largest count or size an option takes: a tensor dimension past it is surely a typo (and
# would exhaust any memory long before it is reached).
COUNT_LIMIT = 2**31 - 1


def _whole(text: str, least: int, requirement: str) -> int:
    value = int(text)  # a ValueError makes argparse say "invalid <type name> value"
    if value < least:
        raise argparse.ArgumentTypeError(f"must be {requirement}, got {value}")
    if value > COUNT_LIMIT:
        raise argparse.ArgumentTypeError(f"must be at most 2**31 - 1, got {value}")
    return value


def count(text: str) -> int:
    """A whole number >= 1: steps, samples, examples, a batch."""
    return _whole(text, 1, "at least 1")


def examples(text: str) -> int:
    """A number of examples to average over, with a standard error: at least 2."""
    return _whole(text, 2, "at least 2 (for a standard error)")


def nonnegative(text: str) -> int:
    """A whole number >= 0 (warm-up steps)."""
    return _whole(text, 0, "0 or more")


def seed(text: str) -> int:
    """A seed that a torch.Generator accepts: 0 <= seed < 2**63."""
    value = int(text)
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**63), got {value}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1] (a decay, a dropout probability)."""
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number >= 0 (DDIM's eta)."""
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def positive(text: str) -> float:
    """A finite number > 0 (a learning rate, a clipping norm)."""
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


class Parser(argparse.ArgumentParser):
    """argparse that lists its arguments in `arguments`, so that an unknown option is answered
    with the valid ones (and a close match). Declare every argument with `add`."""

    def __init__(self, **kwargs):
        kwargs.setdefault("epilog", EXIT_STATUS)
        super().__init__(add_help=False, **kwargs)
        self.arguments: list[argparse.Action] = []
        self.add("-h", "--help", action="help", help="show this help and exit")

    def add(self, *names: str, group=None, **kwargs) -> argparse.Action:
        """`add_argument`, on `group` (an argument group of this parser) if given."""
        action = (group or self).add_argument(*names, **kwargs)
        self.arguments.append(action)
        return action

    def adder(self, title: str) -> Callable[..., argparse.Action]:
        """`add` for a new argument group, shown in the help under `title`."""
        group = self.add_argument_group(title)
        return lambda *names, **kwargs: self.add(*names, group=group, **kwargs)

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(self.unknown_message(extras))
        return parsed

    def unknown_message(self, extras: list[str]) -> str:
        options = sorted(s for a in self.arguments for s in a.option_strings if s.startswith("--"))
        unknown = [e for e in extras if e.startswith("-")] or extras
        hints = []
        for word in unknown:
            close = difflib.get_close_matches(word.split("=")[0], options, n=1)
            hints.append(f"{word} (did you mean {close[0]}?)" if close else word)
        return f"unrecognized arguments: {' '.join(hints)}\nvalid options: {', '.join(options)}"


def build_parser() -> Parser:
    """The top level. `parse_known_args` gives the command and, unparsed, the rest of the line."""
    parser = Parser(
        prog="ddpm",
        description="Denoising diffusion probabilistic models "
        "(Ho, Jain & Abbeel 2020): train, sample, evaluate.",
        epilog=f"'ddpm COMMAND --help' shows the options of a command. {EXIT_STATUS}",
    )
    parser.add(
        "--version",
        action="version",
        version=f"%(prog)s {__version__}",
        help="show the version and exit",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=argparse.ArgumentParser
    )
    for name, summary in SUMMARIES.items():
        # Without options of its own (not even --help), a command leaves everything after its
        # name to `ddpm.cli.options.command_parser`.
        sub.add_parser(name, help=summary, add_help=False)
    return parser

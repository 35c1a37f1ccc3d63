"""`harness` command line. One module per subcommand, each with its HELP, EXAMPLES, `add_arguments(parser)` and
`run(args)`; this module assembles the parser and maps errors to exit codes (bad input: one line, exit 2)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from harness.cli import (ablate, board, compare, estimate, export, ingest, ls, params, prefetch, run, slurm,
                         status, validate)
from harness.cli.common import resolve_user_paths, subparser
from harness.spec.errors import EXIT_BROKEN_PIPE, EXIT_INPUT, InputError

# in the order `harness --help` lists them
SUBCOMMANDS = {"run": run, "validate": validate, "estimate": estimate, "status": status, "slurm": slurm, "prefetch": prefetch, "ls": ls,
               "export": export, "params": params, "ablate": ablate, "compare": compare, "ingest": ingest,
               "board": board}


class Parser(argparse.ArgumentParser):
    """argparse, refusing a bad option the way every bad input is refused: one line `error: ...`, exit 2 (the
    usage is one `--help` away); the subcommands' parsers are of this class too."""

    def error(self, message: str):
        message = message.removeprefix("argument ")
        self.exit(EXIT_INPUT, f"error: {message}; see {self.prog} --help\n")

    def parse_known_args(self, args=None, namespace=None):
        """What argparse leaves to the caller, refused by the parser that owns the option: an unknown option after
        a subcommand (argparse names the top-level parser: `see harness --help`), and an empty value (`--db
        "$URL"` with $URL unset) - read as "the default", it wrote into results/harness.db."""
        given = list(sys.argv[1:] if args is None else args)
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and self._subparsers is None:   # a subcommand's parser: every option it takes is declared
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        for action in self._actions:
            value = getattr(namespace, action.dest, None)
            typed = [s for s in action.option_strings   # the spelling the user typed (--db or --from-store)
                     if any(a == s or a.startswith(s + "=") for a in given)]
            if action.dest == "db" and action.option_strings:   # what errors about the store name it by
                namespace.db_option = (typed or action.option_strings)[0]
            if getattr(action, "empty_ok", False):   # an option whose empty value means something (--log-with)
                continue
            if any(isinstance(v, str) and not v.strip() for v in (value if isinstance(value, list) else [value])):
                if not action.option_strings:
                    self.error(f"{action.metavar or action.dest}: empty")
                self.error(f"{(typed or action.option_strings)[0]}: empty (leave the option out for its default)")
        return namespace, extras


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="harness", description="Benchmark harness for parameter-efficient transfer learning.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        module.add_arguments(subparser(sub, name, module.HELP, module.EXAMPLES))
    return parser


def main(argv: list[str] | None = None) -> int:
    if (sys.argv[1:] if argv is None else argv)[:1] == ["run"]:   # a worker: before anything slow
        run.install_stop_handlers()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        resolve_user_paths(args)
        code = SUBCOMMANDS[args.command].run(args)
        sys.stdout.flush()   # here, where a closed pipe is caught, not at the interpreter's exit
        return code
    except InputError as e:
        text = str(e)
        if getattr(args, "db_source", "--db") != "--db" and text.startswith("--db:"):   # the store came from
            text = args.db_source + text.removeprefix("--db")   # $HARNESS_DB, or the option is spelled --from-store
        print(f"error: {text}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:
        # the reader went away (`harness ls | head -1`): stop quietly, as `ls | head -1` does; what is still
        # buffered goes to /dev/null so that the interpreter's last flush does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


__all__ = ["build_parser", "main", "resolve_user_paths"]

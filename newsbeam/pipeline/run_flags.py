"""The flags of ``newsbeam run``: its help, and one line on the first bad flag.

Beam parses its own flags later, leniently; this module parses them first, strictly,
so a typo or a bad value stops the run with one line instead of a log line or a usage block.
"""
from __future__ import annotations

import argparse
import difflib
from typing import Optional, Sequence


def _all_option_classes(root: Optional[type] = None) -> list[type]:
    from apache_beam.options.pipeline_options import PipelineOptions

    found = []
    for subclass in (root or PipelineOptions).__subclasses__():
        found.append(subclass)
        found.extend(_all_option_classes(subclass))
    return found


def run_help_parser(parser_class: type = argparse.ArgumentParser, **kwargs) -> argparse.ArgumentParser:
    """`newsbeam run --help`: newsbeam's flags first, then every Beam flag."""
    from newsbeam.pipeline.options import NewsOptions

    parser = parser_class(prog="newsbeam run", conflict_handler="resolve",
                          description="Ingest feeds and files into a Hive-partitioned Parquet dataset.", **kwargs)
    NewsOptions._add_argparse_args(parser)
    for option_class in _all_option_classes():
        if option_class is not NewsOptions:
            option_class._add_argparse_args(parser.add_argument_group(option_class.__name__))
    return parser


class _FlagError(Exception):
    """A flag or value argparse refused; the message is argparse's own line."""


def flag_problem(argv: Sequence[str]) -> Optional[str]:
    """One line on the first unknown flag or bad value in ``argv``; None when all parse.

    Beam parses with ``parse_known_args``: it drops a flag it does not know
    with a log line (a typo such as ``--ouput`` and the run goes ahead
    without it), and a bad value makes argparse print the whole usage block.
    This parses ``argv`` as Beam will (every PipelineOptions subclass, no
    abbreviations) but turns either into one line.
    """
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    class OneLineParser(_BeamArgumentParser):
        def error(self, message):
            if message.startswith("ambiguous option: "):
                return  # Beam ignores these too: the flag is then reported as unknown below
            raise _FlagError(message)

    parser = run_help_parser(OneLineParser, allow_abbrev=False, add_help=False)
    argv = list(argv)
    try:
        _, unknown = parser.parse_known_args(argv)
    except _FlagError as error:
        return str(error)
    except Exception as error:  # some Beam actions fail on a bad value with their own exception
        return _failing_value(parser, argv, error)
    flags = [arg.split("=", 1)[0] for arg in unknown if arg.startswith("-")]
    if flags:
        close = difflib.get_close_matches(flags[0], list(parser._option_string_actions), n=1)
        return f"unknown flag {flags[0]}" + (f" (did you mean {close[0]}?)" if close else "")
    if unknown:
        return f"unexpected argument {unknown[0]!r}: values follow their flag"
    return None


def _failing_value(parser: argparse.ArgumentParser, argv: list[str], error: Exception) -> str:
    """Name the flag whose action raised ``error``: the last flag of the shortest ``argv`` prefix that raises."""
    for end in range(1, len(argv) + 1):
        try:
            parser.parse_known_args(argv[:end])
        except _FlagError:
            continue  # a prefix that cuts a flag from its value
        except Exception:
            flag = next((arg for arg in reversed(argv[:end]) if arg.startswith("-")), argv[end - 1])
            return f"argument {flag.split('=', 1)[0]}: invalid value ({type(error).__name__}: {error})"
    return f"invalid flags ({type(error).__name__}: {error})"

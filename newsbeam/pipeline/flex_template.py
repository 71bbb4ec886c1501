"""Flex Template entry point: recover --state from the dataset, then submit the job.

The launcher image runs this file with the template parameters as
``--name=value`` flags. It submits the job and returns without waiting, so it
takes no ``--state`` lock and writes no run manifest; committed data is the
record: the ids of rows already written are recovered into ``--state`` first.
"""
from __future__ import annotations

import logging
import sys
from typing import Iterable, Iterator, Sequence

# Template parameters always carry a value; these newsbeam flags take none.
SWITCHES = ("streaming", "skip_labels", "full_refresh", "full_text", "allow_private_addresses",
            "allow_private_page_addresses")
TRUE_WORDS = ("", "true", "1", "yes")


def as_flags(args: Iterable[str]) -> Iterator[str]:
    """``--streaming=true`` -> ``--streaming``; ``--streaming=false`` -> nothing; others as given."""
    for arg in args:
        name, _, value = arg.lstrip("-").partition("=")
        if name in SWITCHES:
            if value.lower() in TRUE_WORDS:
                yield f"--{name}"
        else:
            yield arg


def main(argv: Sequence[str]) -> None:
    from apache_beam.options.pipeline_options import PipelineOptions

    from newsbeam.pipeline.graph import build
    from newsbeam.pipeline.options import NewsOptions
    from newsbeam.state.store import recover_uncommitted

    logging.basicConfig(level=logging.INFO)
    options = PipelineOptions(list(as_flags(argv)))
    news = options.view_as(NewsOptions)
    if news.state and not news.full_refresh:
        recover_uncommitted(news.state, news.output)
    build(options).run()


if __name__ == "__main__":
    main(sys.argv[1:])

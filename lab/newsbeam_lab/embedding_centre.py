"""The centre of a head set's article vectors: the mean unit vector of its
training texts under its own (fine-tuned) encoder, stored with the heads.

Articles of one outlet, and news as such, share a direction that lifts every
cosine, so without centring a story threshold low enough to join one event
told in two languages also chains an outlet's unrelated briefs together. The
centre is measured on training texts, never on a dev set or a user's run, and it
belongs to the encoder the heads were trained with (docs/research/stories.md).

    python -m newsbeam_lab.embedding_centre --heads DIR [--data_root ../shared/data]

adds the centre to the heads in DIR; ``newsbeam train-heads`` does it for every
head set it writes.
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from newsbeam.labelling import PASSAGE_PREFIX
from newsbeam.labelling.heads import HeadSet, load_heads

CENTRE_TEXTS = 5000  # the mean of 5,000 unit vectors moves a cosine by well under 0.01
CENTRE_SEED = 0


def centre_texts(texts: Sequence[str], count: int = CENTRE_TEXTS, seed: int = CENTRE_SEED) -> list[str]:
    """A seeded sample of ``count`` distinct non-empty texts (an article and its coarse copy count once)."""
    distinct = sorted({text for text in texts if text and text.strip()})
    random.Random(seed).shuffle(distinct)
    return distinct[:count]


def embedding_centre(encoder, texts: Sequence[str], max_tokens: int) -> np.ndarray:
    """The mean of the texts' unit vectors as the labeller makes them before centring."""
    if not texts:
        raise ValueError("no texts to measure the embedding centre on")
    return encoder.embed(list(texts), max_tokens, PASSAGE_PREFIX).mean(axis=0).astype(np.float32)


def with_centre(head_set: HeadSet, encoder, texts: Sequence[str], sources: Sequence[str]) -> HeadSet:
    """``head_set`` carrying the centre of ``texts`` (sampled as :func:`centre_texts`) under ``encoder``."""
    import dataclasses

    from newsbeam_lab.training_data import _portable

    sample = centre_texts(texts)
    centre = embedding_centre(encoder, sample, head_set.max_tokens)
    return dataclasses.replace(head_set, embedding_centre=centre,
                               embedding_centre_source={"texts": len(sample), "seed": CENTRE_SEED,
                                                        "sources": [_portable(spec) for spec in sources]})


def add_centre(folder: str | Path, specs: Sequence[str], data_root: Optional[str], *, encoder: Optional[str] = None,
               cache_dir: Optional[str] = None) -> HeadSet:
    """Measure the centre of the heads in ``folder`` on the topic rows of ``specs`` and rewrite them
    with it; ``encoder``: the address of the encoder they were trained on (None: the embedded one)."""
    from newsbeam.labelling.labeller import load_labeller
    from newsbeam.labelling.taxonomy import load_taxonomy
    from newsbeam_lab.heads_writer import save_heads
    from newsbeam_lab.training_data import read_sources

    head_set = load_heads(str(folder))
    # the encoder as the labeller loads it for these heads: fine-tuned as they expect
    loaded = load_labeller(encoder=encoder, heads=str(folder), cache_dir=cache_dir).encoder
    texts = read_sources(specs, load_taxonomy().topic_ids, task="topic", data_root=data_root).texts
    head_set = with_centre(head_set, loaded, texts, specs)
    save_heads(head_set, Path(folder))
    return head_set


def main(argv: Optional[list[str]] = None) -> int:
    from newsbeam_lab import DATA_ROOT_ENV, default_data_root
    from newsbeam_lab.training_data import default_data

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heads", required=True, help="Heads folder to add the centre to (rewritten in place).")
    parser.add_argument("--data_root", default=default_data_root(), help=f"Shared data root (or ${DATA_ROOT_ENV}).")
    parser.add_argument("--topic_data", action="append", default=None, metavar="PATTERN[@MAP]",
                        help="Texts to measure on (default: the recipe's topic training data; needs --data_root).")
    args = parser.parse_args(argv)
    if args.topic_data is None and args.data_root is None:
        print(f"embedding_centre: the recipe's data needs --data_root or ${DATA_ROOT_ENV}", file=sys.stderr)
        return 2
    specs = args.topic_data or default_data(args.data_root)["topic"]
    head_set = add_centre(args.heads, specs, args.data_root)
    print(f"{args.heads}: embedding centre of {head_set.embedding_centre_source['texts']} texts, "
          f"norm {float(np.linalg.norm(head_set.embedding_centre)):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

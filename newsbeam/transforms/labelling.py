"""Topic and sentiment labels inside Beam via ``RunInference``.

Beam's HuggingFace handlers need TensorFlow with transformers 5, so newsbeam
has its own ``ModelHandler``. RunInference loads the model once per worker
process and shares it across threads; batches are cut by an estimated token
budget, and the encoder sorts each batch by length so padding stays small.
A batch that raises is dead-lettered article by article with the reason.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

import apache_beam as beam
from apache_beam.ml.inference import base as beam_inference
from apache_beam.ml.inference.base import ModelHandler, RunInference

from newsbeam.labelling import DEFAULT_FEED_EVIDENCE_WEIGHT, DEFAULT_MAX_BATCH_TOKENS, DEFAULT_MAX_TOKENS
from newsbeam.labelling.memory import release_freed_memory
from newsbeam.metrics import counter
from newsbeam.records import Article, DeadLetter

LOGGER = logging.getLogger(__name__)

DEAD_LETTER = "dead_letter"
STAGE = "label"
CHARS_PER_TOKEN_ESTIMATE = 3


def _restore_beams_memory_metric() -> None:
    """Beam imports ``resource`` together with its optional ModelManager, which
    needs scipy; without scipy it drops both, then logs "Resource module is not
    available" at every model load and reports the loaded model's memory as 0.
    The module is there on every POSIX system."""
    if beam_inference.resource is None and sys.platform != "win32":
        import resource

        beam_inference.resource = resource


_restore_beams_memory_metric()


# Estimated tokens of the articles handed to one run_inference call, which
# sorts them by length into encoder batches of max_batch_tokens: enough
# articles (about 256 of 128 tokens) that the sorted batches pad little.
ARTICLE_BATCH_TOKENS = 32_768


@dataclass(frozen=True)
class LabellerConfig:
    """Everything needed to build a Labeller on a worker; addresses, not objects."""

    encoder: Optional[str] = None
    heads: Optional[str] = None
    taxonomy: Optional[str] = None
    topic_model: Optional[str] = None
    sentiment_model: Optional[str] = None
    label_map: Optional[str] = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS
    torch_threads: Optional[int] = None
    cache_dir: Optional[str] = None
    quantize: str = "none"
    feed_evidence_weight: float = DEFAULT_FEED_EVIDENCE_WEIGHT
    embeddings: bool = False

    @classmethod
    def from_options(cls, news) -> "LabellerConfig":
        """From NewsOptions: the flags carry the same names (--model_cache is cache_dir)."""
        names = [f.name for f in dataclasses.fields(cls) if f.name not in ("cache_dir", "torch_threads")]
        names.remove("embeddings")  # story grouping needs the vectors too, whether or not they are stored
        return cls(cache_dir=news.model_cache, torch_threads=default_torch_threads(news),
                   embeddings=bool(news.embeddings or news.stories),
                   **{name: getattr(news, name) for name in names})

    def load(self):
        from newsbeam.labelling.labeller import load_labeller

        return load_labeller(**dataclasses.asdict(self))


def default_torch_threads(news) -> Optional[int]:
    """--torch_threads, else cores shared out among local worker processes.

    Several local worker processes each running torch on every core fight
    over the CPU; one process keeps torch's own default.
    """
    if news.torch_threads is not None:
        return news.torch_threads
    from apache_beam.options.pipeline_options import DirectOptions

    direct = news.view_as(DirectOptions)
    workers = direct.direct_num_workers or 1
    if direct.direct_running_mode == "multi_processing" and workers > 1:
        return max(1, (os.cpu_count() or 1) // workers)
    return None


def labelling_text(article: Article) -> str:
    from newsbeam.labelling.input_text import article_text

    return article_text(article.title, article.summary, article.body)


def feed_evidence(article: Article) -> tuple[str, ...]:
    """The subjects the article's feed names for it: its <category> tags and URL sections."""
    from newsbeam.labelling.feed_evidence import subject_evidence

    return subject_evidence(article.tags, article.url)


def apply_labels(article: Article, labels, model_id: str) -> Article:
    from newsbeam.embeddings import to_record

    embedding, embedding_scale = to_record(labels.embedding)
    return article.replace(
        embedding=embedding,
        embedding_scale=embedding_scale,
        topic=labels.topic,
        topic_score=None if labels.topic_score is None else round(float(labels.topic_score), 4),
        topic_scores=tuple((label, round(float(score), 4)) for label, score in labels.topic_scores),
        sentiment=labels.sentiment,
        sentiment_score=None if labels.sentiment_score is None else round(float(labels.sentiment_score), 4),
        model=model_id,
    )


class ArticleModelHandler(ModelHandler[Article, Article, Any]):
    """Article batches in, labelled Articles out; one encoder pass per article."""

    def __init__(self, config: LabellerConfig, max_batch_articles: int = 256):
        super().__init__()
        self.config = config
        self.max_batch_articles = max_batch_articles

    def load_model(self):
        model = self.config.load()
        # The encoder keeps freed memory mapped (newsbeam.labelling.memory), so what
        # the stages before labelling freed goes back to the OS now, not after
        # the first batch, on top of the model and its activations.
        release_freed_memory()
        return model

    def estimated_tokens(self, article: Article) -> int:
        characters = len(labelling_text(article))
        return max(1, min(self.config.max_tokens, 2 + characters // CHARS_PER_TOKEN_ESTIMATE))

    def batch_elements_kwargs(self):
        # A fixed budget of estimated tokens per batch. Beam's adaptive sizing
        # starts at weight 1 and, with every article weighing ~max_tokens,
        # stayed at one article per batch (measured: 4x slower). A bundle's end
        # still flushes a smaller batch, so streaming latency is bounded by bundles.
        budget = max(self.config.max_batch_tokens * 4, ARTICLE_BATCH_TOKENS, self.config.max_tokens)
        return {"min_batch_size": budget, "max_batch_size": budget, "element_size_fn": self.estimated_tokens}

    def run_inference(self, batch: Sequence[Article], model, inference_args=None) -> Iterable[Article]:
        texts = [labelling_text(article) for article in batch]
        # weight 1 (the default) ignores the evidence: don't read every article's tags and URL for nothing
        evidence = [feed_evidence(article) for article in batch] if model.feed_evidence_weight != 1.0 else None
        labels = model.label_token_ids(model.token_ids(texts), evidence)
        release_freed_memory()  # measured: without it RSS grows ~30 MB per 1,000 articles
        return [apply_labels(article, label, model.model_id) for article, label in zip(batch, labels)]

    def get_num_bytes(self, batch: Sequence[Article]) -> int:
        return sum(len(labelling_text(article).encode()) for article in batch)

    def get_metrics_namespace(self) -> str:
        return "newsbeam_labels"


class _DeadLetterFailedBatchesFn(beam.DoFn):
    def __init__(self):
        self.failed = counter("dead_lettered_label")

    def process(self, failed):
        batch, error = failed
        if isinstance(error, tuple):  # Beam hands over (type, repr, traceback lines)
            reason = f"inference failed: {error[1]}"
        else:
            reason = f"inference failed: {type(error).__name__}: {error}"
        for article in batch:
            self.failed.inc()
            yield DeadLetter(
                source=article.source,
                stage=STAGE,
                reason=reason[:2000],
                excerpt=DeadLetter.excerpt_of(article.title or article.body),
                article_id=article.article_id,
            )


class LabelArticles(beam.PTransform):
    """Articles -> labelled Articles (main) and DeadLetters (``dead_letter``)."""

    def __init__(self, handler: ModelHandler):
        super().__init__()
        self.handler = handler

    def expand(self, articles):
        labelled, failures = articles | "RunEncoderAndHeads" >> RunInference(self.handler).with_exception_handling()
        dead = failures.failed_inferences | "DeadLetterFailedBatches" >> beam.ParDo(_DeadLetterFailedBatchesFn())
        return {"articles": labelled, DEAD_LETTER: dead}

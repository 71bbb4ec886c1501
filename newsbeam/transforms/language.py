"""The language stage: one language per article (rules: :mod:`newsbeam.language`)."""
from __future__ import annotations

import apache_beam as beam

from newsbeam.language import DEFAULT_MIN_CONFIDENCE, UNDETERMINED, _identifier, detect_language, language_sample
from newsbeam.metrics import counter
from newsbeam.records import Article


class DetectLanguage(beam.PTransform):
    """Fill ``language``/``language_score`` on each Article."""

    def __init__(self, min_confidence: float = DEFAULT_MIN_CONFIDENCE):
        super().__init__()
        self.min_confidence = min_confidence

    def expand(self, articles):
        return articles | "IdentifyLanguage" >> beam.ParDo(_DetectLanguageFn(self.min_confidence))


class _DetectLanguageFn(beam.DoFn):
    def __init__(self, min_confidence: float):
        self.min_confidence = min_confidence
        self.undetermined = counter("language_undetermined")

    def setup(self):
        _identifier()

    def process(self, article: Article):
        code, score = detect_language(language_sample(article), article.language_hint, min_confidence=self.min_confidence)
        if code == UNDETERMINED:
            self.undetermined.inc()
        yield article.replace(language=code, language_score=round(score, 4))

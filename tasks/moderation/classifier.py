"""The automated score of one text: a profanity classifier, and two spam signals.

Profanity comes from alt-profanity-check: a TF-IDF vectorizer and five
sigmoid-calibrated linear SVMs, trained on about 200,000 labelled comments,
shipped as files inside the package and loaded from site-packages. Nothing is
downloaded, at install or at run time.

Its ``predict_prob`` goes through scikit-learn's ``CalibratedClassifierCV``,
which validates its input once per fold: about 3.5 ms per text, almost all of
it checks. ``ProfanityModel`` evaluates the same model as one sparse product
with the five weight vectors and their sigmoids (a few tenths of a
millisecond); a test holds it equal to ``predict_prob`` on a table of texts.
If a release ships a model of another shape, it falls back to ``predict_prob``.

Spam signals (scored in [0, 1]):
- repetition: the author posted the same text ``n`` other times in the last
  day: ``1 - 0.5 ** n`` (one repeat 0.5, three 0.875);
- link density: links per word above 0.2, reaching 1.0 at 0.5, counted only
  from two links up (one link in a short post is ordinary).

They combine as independent evidence: ``1 - (1 - p)(1 - r)(1 - l)``, rounded
to the two decimals of ``automated_score DECIMAL(3,2)``.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import cached_property

import numpy as np

# Untrusted text is bounded before any work: the vectorizer's time and memory grow with
# its length. A longer text is scored on its head and its tail.
MAX_TEXT_CHARS = 5000
_TAIL_CHARS = 1000

# Linear in the text's length (no nested quantifiers).
_LINK = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)


def bounded(text: str) -> str:
    if len(text) <= MAX_TEXT_CHARS:
        return text
    # The joining space counts: the result is at most MAX_TEXT_CHARS long.
    return text[:MAX_TEXT_CHARS - _TAIL_CHARS - 1] + " " + text[-_TAIL_CHARS:]


@dataclass(frozen=True)
class Signals:
    profanity: float
    repetition: float
    link_density: float

    @property
    def score(self) -> Decimal:
        combined = 1.0 - (1.0 - self.profanity) * (1.0 - self.repetition) * (1.0 - self.link_density)
        return Decimal(str(min(max(combined, 0.0), 1.0))).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)

    def as_dict(self) -> dict:
        return {"profanity": round(self.profanity, 4), "repetition": round(self.repetition, 4),
                "link_density": round(self.link_density, 4)}


def repetition_signal(repeats: int) -> float:
    return 1.0 - 0.5 ** max(repeats, 0)


def link_density_signal(text: str) -> float:
    links = len(_LINK.findall(text))
    if links < 2:
        return 0.0
    density = links / max(len(text.split()), 1)
    return min(max((density - 0.2) / 0.3, 0.0), 1.0)


class ProfanityModel:
    """alt-profanity-check's model, evaluated directly (see the module docstring)."""

    @cached_property
    def _library(self):
        with warnings.catch_warnings():
            # The pickled estimators name the scikit-learn release they were saved with.
            warnings.simplefilter("ignore")
            from profanity_check import profanity_check
        return profanity_check

    @cached_property
    def _linear(self) -> tuple | None:
        """(weights n_features × k, intercepts, sigmoid a, sigmoid b) or None if the model is not
        k sigmoid-calibrated binary linear classifiers."""
        model = self._library.model
        try:
            folds = model.calibrated_classifiers_
            if model.method != "sigmoid" or len(model.classes_) != 2:
                return None
            weights, intercepts, a, b = [], [], [], []
            for fold in folds:
                (calibrator,) = fold.calibrators
                estimator = fold.estimator
                if estimator.coef_.shape[0] != 1:
                    return None
                weights.append(np.asarray(estimator.coef_[0], dtype=np.float64))
                intercepts.append(float(estimator.intercept_[0]))
                a.append(float(calibrator.a_))
                b.append(float(calibrator.b_))
        except (AttributeError, TypeError, ValueError):
            return None
        return np.column_stack(weights), np.array(intercepts), np.array(a), np.array(b)

    def warm(self) -> None:
        """Load the model now (about a second), not inside the first task."""
        _ = self._linear

    def probabilities(self, texts: list[str]) -> list[float]:
        texts = [bounded(t) for t in texts]
        if not texts:
            return []
        linear = self._linear
        if linear is None:
            return [float(p) for p in self._library.predict_prob(texts)]
        weights, intercepts, a, b = linear
        decision = self._library.vectorizer.transform(texts) @ weights + intercepts   # texts × folds
        # scikit-learn's _SigmoidCalibration: P(y=1 | d) = 1 / (1 + exp(a·d + b)), averaged over folds.
        return [float(p) for p in (1.0 / (1.0 + np.exp(a * decision + b))).mean(axis=1)]

    def library_probabilities(self, texts: list[str]) -> list[float]:
        """The library's own call: the reference the fast path is tested and benchmarked against."""
        return [float(p) for p in self._library.predict_prob(texts)]


MODEL = ProfanityModel()


def signals(text: str, repeats: int, model: ProfanityModel = MODEL) -> Signals:
    (profanity,) = model.probabilities([text])
    return Signals(profanity, repetition_signal(repeats), link_density_signal(bounded(text)))

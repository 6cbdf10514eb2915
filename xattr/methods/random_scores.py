"""Random baseline: one uniform draw per word, shared out over the word's pieces."""

from __future__ import annotations

import torch
from pydantic import Field

from xattr.methods.base import AttributionMethod, MethodParams, register_method, row_generator
from xattr.methods.context import MethodContext
from xattr.models.encoding import Batch, EncodedText
from xattr.models.loading import LoadedModel


def random_word_scores(encoded: EncodedText, seed: int) -> torch.Tensor:
    """Token scores of one text, ``(n_tokens,)`` float64.

    Word ``w`` (numbered as in ``encoded.word_index``) draws ``u_w ~ U[0, 1)`` from
    ``row_generator(seed, encoded.input_ids)``, one draw per word number in order
    ``0..max word index``; each of its ``c_w`` pieces scores ``u_w / c_w``. Special tokens and
    pieces aligned to no word (word index -1) score 0.

    Args:
        encoded: The encoded text.
        seed: The method's seed.
    """
    words = torch.tensor(encoded.word_index, dtype=torch.long)  # (n_tokens,)
    scores = torch.zeros(len(encoded), dtype=torch.float64)
    in_word = words >= 0
    if not bool(in_word.any()):
        return scores
    n_words = int(words.max()) + 1
    draws = torch.rand(n_words, generator=row_generator(seed, encoded.input_ids), dtype=torch.float64)  # (n_words,)
    pieces = torch.bincount(words[in_word], minlength=n_words).to(torch.float64)  # (n_words,)
    scores[in_word] = draws[words[in_word]] / pieces[words[in_word]]
    return scores


class RandomScoresParams(MethodParams):
    """Parameters of :class:`RandomScores`."""

    seed: int = Field(0, description="seed of the draws (combined with each text's token ids)")


@register_method(
    "random",
    summary="one uniform random score per word, split evenly over its word pieces",
    paper="random baseline (per word; xattr METHOD-NOTES)",
    signed=False,
    cost="0",
)
class RandomScores(AttributionMethod[RandomScoresParams]):
    """Random baseline at the word level (see METHOD-NOTES).

    Each word draws one ``u ~ U[0, 1)`` and each of its ``c`` word pieces scores ``u / c``, so
    the sum over a word's pieces is exactly one uniform draw whatever the piece count: when
    piece scores are summed into word scores, words split into several pieces are not favoured
    (independent draws per piece would sum to a larger value for them, and piece count alone
    correlates with sentiment gold). Under max-aggregation over pieces a word scores ``u / c``,
    which does depend on ``c``: aggregate this baseline by summing. Special tokens score 0.
    Draws depend only on the seed and the text's token ids (not on the target or the batch).
    Word indices come from the encoded corpus of the method's context.
    """

    def attribute_batch(
        self, loaded: LoadedModel, batch: Batch, targets: torch.Tensor, context: MethodContext
    ) -> torch.Tensor:
        """Scores ``(batch, seq)``; padding positions score 0."""
        out = torch.zeros(batch.input_ids.shape, dtype=torch.float64)  # (batch, seq)
        for row, text in enumerate(context.batch_texts(batch, self.name)):
            out[row, : len(text)] = random_word_scores(text, self.params.seed)
        return out.to(batch.input_ids.device)

"""CAM: last-layer token activations projected on the target's classifier weights."""

from __future__ import annotations

from collections.abc import Callable

import torch

from xattr.methods.attention_maps import attention_pass
from xattr.methods.base import AttributionMethod, MethodParams, register_method
from xattr.methods.context import MethodContext
from xattr.models.encoding import Batch
from xattr.models.loading import LoadedModel

#: Maps last-layer hidden states ``(batch, seq, hidden)`` to per-token classifier inputs, and the
#: classifier's weight matrix ``(num_outputs, features)``.
Head = tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]


def classifier_head(loaded: LoadedModel) -> Head:
    """The per-token feature map and final weight matrix of a supported model's output head.

    Supported: extractive QA heads (``qa_outputs``, applied per token already), BERT-style
    ``pooler`` + ``classifier``, RoBERTa-style ``classifier.dense`` + ``classifier.out_proj``, and
    DistilBERT-style ``pre_classifier`` + ``classifier``. The layers between the encoder and the
    final linear layer (pooler dense + tanh, ...) are applied to every token instead of only the
    first, so that the final weights meet each token's activation as they meet the pooled one.

    Raises:
        ValueError: The head is of another kind (the model class is named).
    """
    model = loaded.model
    if loaded.task == "question_answering" and isinstance(getattr(model, "qa_outputs", None), torch.nn.Linear):
        return (lambda h: h), model.qa_outputs.weight
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, torch.nn.Linear):
        base = getattr(model, getattr(model, "base_model_prefix", ""), None)
        pooler = getattr(base, "pooler", None)
        if pooler is not None and isinstance(getattr(pooler, "dense", None), torch.nn.Linear):
            return (lambda h: torch.tanh(pooler.dense(h))), classifier.weight
        pre = getattr(model, "pre_classifier", None)
        if isinstance(pre, torch.nn.Linear):
            return (lambda h: torch.relu(pre(h))), classifier.weight
    out_proj = getattr(classifier, "out_proj", None)
    dense = getattr(classifier, "dense", None)
    if isinstance(out_proj, torch.nn.Linear) and isinstance(dense, torch.nn.Linear):
        return (lambda h: torch.tanh(dense(h))), out_proj.weight
    raise ValueError(f"CAM does not know the output head of {type(model).__name__}")


@register_method(
    "cam",
    summary="last-layer token activations projected on the target's classifier weights",
    paper="Zhou et al. 2016, Eq. 2; Mask-LRP (Song et al. 2024) Sec. 5.2",
    signed=True,
)
class Cam(AttributionMethod[MethodParams]):
    """Class activation mapping (Zhou et al. 2016, Eq. 1-2) with tokens in place of pixels.

    CAM writes the class score as ``S_c = sum_k w^c_k F_k`` over pooled features and maps it back
    to locations as ``M_c(t) = sum_k w^c_k f_k(t)`` (Eq. 2). Here ``f(t)`` is the last layer's
    hidden state of token ``t`` passed through the head's layers before the final linear one
    (see :func:`classifier_head`), and ``w^c`` the final weight row of the explained output (for QA:
    the start or the end row of ``qa_outputs``). Biases are left out, as in CAM. Scores are signed.
    """

    def attribute_batch(
        self, loaded: LoadedModel, batch: Batch, targets: torch.Tensor, context: MethodContext
    ) -> torch.Tensor:
        """Scores ``(batch, seq)``."""
        features, weight = classifier_head(loaded)
        passed = attention_pass(loaded, batch, targets, gradients=False)
        rows = targets // loaded.max_length if loaded.task == "question_answering" else targets  # 0 start, 1 end
        with torch.no_grad():
            f = features(passed.hidden_states[-1])  # (batch, seq, features)
            return (f * weight[rows].unsqueeze(1)).sum(dim=-1)

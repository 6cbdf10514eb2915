"""Batched LRP for BERT-family encoders: rules attached by hooks inside a context manager.

``with lrp_rules(model) as session:`` attaches the rules of :mod:`xattr.lrp.rules` to every linear
layer, LayerNorm, activation and attention block through forward hooks; a forward pass then
builds a graph whose ordinary backward pass is the LRP backward pass (Gradient x Input with
modified gradients). The hooks are removed when the block exits, also after an exception, and
transformers itself is never patched. Attention weights are recomputed from the hooked query and
key projections (the model must run eager attention; the context switches an ``sdpa`` model to
eager and back).

The relevance at the output starts as 1 at the explained logit (Mask-LRP Sec. 3.2: ``R^(0)`` is
one-hot), so the input relevances sum to 1 when biases are zero.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from xattr.lrp.layout import AttentionParts, EncoderLayout, additive_mask, encoder_layout, uses_token_type_ids
from xattr.lrp.rules import (
    AttentionValueRule,
    EpsilonRule,
    HeadGate,
    IdentityRule,
    LayerNormRule,
    PositiveRule,
    stabilised,
)
from xattr.models.attention import AttentionUnavailableError, eager_attention
from xattr.models.forward import frozen_parameters

#: Default stabiliser of the epsilon rule.
DEFAULT_EPSILON = 1e-9

#: The rule for linear layers: ``epsilon`` (Bach et al. 2015) or ``positive`` (Mask-LRP Eq. 4).
LinearRule = Literal["epsilon", "positive"]


@dataclass
class LrpSession:
    """What one forward pass inside :func:`lrp_rules` exposes for the backward pass.

    Attributes:
        layout: The model's encoder layout.
        embedding_output: ``(batch, seq, hidden)`` the encoder input ``x^(N)``, a leaf tensor.
        attention: Per layer, the constant attention probabilities ``(batch, heads, seq, seq)`` fed to
            the attention-value rule (leaves with ``requires_grad`` when ``attention_relevance``).
        layer_outputs: Per layer, its output hidden states (when ``layer_outputs``).
        head_relevance: Per layer, ``(before, after)`` the ``(batch, heads)`` relevance of each head's
            output before and after its gate; filled by the backward pass.
    """

    layout: EncoderLayout
    epsilon: float
    linear_rule: LinearRule
    gates: Sequence[HeadGate | None]
    attention_relevance: bool
    record_layer_outputs: bool
    record_head_relevance: bool
    on_attention: Callable[[int, torch.Tensor], None] | None = None
    embedding_output: torch.Tensor | None = None
    attention: list[torch.Tensor | None] = field(default_factory=list)
    layer_outputs: list[torch.Tensor | None] = field(default_factory=list)
    head_relevance: list[tuple[torch.Tensor, torch.Tensor] | None] = field(default_factory=list)
    _taps: list[dict[str, Any]] = field(default_factory=list)
    _pending: dict[int, torch.Tensor] = field(default_factory=dict)

    def reset(self) -> None:
        """Forget the previous forward pass (called when the embeddings run)."""
        n = len(self.layout.layers)
        self.embedding_output = None
        self.attention = [None] * n
        self.layer_outputs = [None] * n
        self.head_relevance = [None] * n
        self._taps = [{} for _ in range(n)]
        self._pending = {}


def _recorder(session: LrpSession, layer: int) -> Any:
    def record(before: torch.Tensor, after: torch.Tensor) -> None:
        session.head_relevance[layer] = (before, after)

    return record


@contextmanager
def lrp_rules(
    model: nn.Module,
    *,
    epsilon: float = DEFAULT_EPSILON,
    linear_rule: LinearRule = "epsilon",
    gates: Sequence[HeadGate | None] | None = None,
    attention_relevance: bool = False,
    layer_outputs: bool = False,
    head_relevance: bool = False,
    on_attention: Callable[[int, torch.Tensor], None] | None = None,
) -> Iterator[LrpSession]:
    """Attach the LRP rules to ``model`` for the duration of the block.

    Args:
        model: A BERT, RoBERTa or DistilBERT model in eval mode.
        epsilon: Stabiliser of the linear rules' denominators.
        linear_rule: ``epsilon`` (:class:`EpsilonRule`) or ``positive`` (:class:`PositiveRule`, Eq. 4).
        gates: Optional per-layer :class:`HeadGate` (Mask-LRP); ``None`` entries keep every head.
        attention_relevance: Make the attention probabilities leaves whose gradient gives ``R(A)``.
        layer_outputs: Keep each layer's output so its relevance can be read.
        head_relevance: Record each head's output relevance before and after its gate.
        on_attention: Called in the backward pass with ``(layer, R(A))`` for every layer.

    Yields:
        The :class:`LrpSession` the next forward pass fills.

    Raises:
        LrpUnsupportedModelError: Not a supported encoder.
        AttentionUnavailableError: The model cannot run eager attention.
        ValueError: ``gates`` has the wrong number of layers.
    """
    layout = encoder_layout(model)
    num_layers = len(layout.layers)
    if gates is not None and len(gates) != num_layers:
        raise ValueError(f"{len(gates)} head gates given for a model with {num_layers} layers")
    if model.training:
        raise ValueError("LRP needs the model in eval mode (dropout would change every pass)")
    if linear_rule not in ("epsilon", "positive"):
        raise ValueError(f"unknown linear rule {linear_rule!r}; valid: epsilon, positive")
    session = LrpSession(
        layout,
        epsilon,
        linear_rule,
        list(gates) if gates is not None else [None] * num_layers,
        attention_relevance,
        layer_outputs,
        head_relevance,
        on_attention,
    )
    session.reset()
    taps: dict[nn.Module, tuple[int, str]] = {}
    for i, parts in enumerate(layout.attention):
        taps[parts.query] = (i, "query")
        taps[parts.key] = (i, "key")
        taps[parts.value] = (i, "value")
    producers = {producer: k for k, (producer, _, _) in enumerate(layout.functional_activations)}
    activation_ids = {id(m) for m in layout.activations}
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def on_embeddings(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        session.reset()
        leaf = output.detach().requires_grad_(True)
        session.embedding_output = leaf
        return leaf

    def on_linear(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        if not output.requires_grad:
            out = output
        elif session.linear_rule == "positive":
            out = PositiveRule.apply(args[0], module.weight, output, session.epsilon)
        else:
            out = EpsilonRule.apply(output, session.epsilon)
        if module in taps:
            layer, name = taps[module]
            session._taps[layer][name] = out
        if module in producers:
            session._pending[producers[module]] = out
        return out

    def on_layer_norm(module: nn.LayerNorm, args: Any, output: torch.Tensor) -> torch.Tensor:
        (x,) = args[:1]
        if not x.requires_grad:
            return output
        return LayerNormRule.apply(x, output, module.weight, module.eps)

    def on_activation(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        x = args[0]
        return IdentityRule.apply(x, output) if x.requires_grad else output

    def on_consumer(index: int) -> Any:
        def hook(module: nn.Module, args: Any) -> Any:
            z = session._pending.pop(index, None)
            if z is None or not args[0].requires_grad:
                return None
            return (IdentityRule.apply(z, args[0]), *args[1:])

        return hook

    def on_attention_module(layer: int) -> Any:
        def hook(module: nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
            mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
            session._taps[layer]["mask"] = mask

        return hook

    def on_out_proj(layer: int, parts: AttentionParts) -> Any:
        def hook(module: nn.Module, args: Any) -> Any:
            tap = session._taps[layer]
            value = tap["value"]
            batch, seq, _ = value.shape
            heads, dim = parts.num_heads, parts.head_dim

            def split(t: torch.Tensor) -> torch.Tensor:
                return t.view(batch, seq, heads, dim).transpose(1, 2)  # (batch, heads, seq, dim)

            with torch.no_grad():
                scores = split(tap["query"]) @ split(tap["key"]).transpose(-2, -1) * parts.scaling
                mask = additive_mask(tap.get("mask"), scores.dtype)
                if mask is not None:
                    scores = scores + mask
                probs = torch.softmax(scores, dim=-1)  # (batch, heads, seq, seq)
            if session.attention_relevance:
                probs.requires_grad_(True)
            session.attention[layer] = probs
            callback = None
            if session.on_attention is not None:
                callback = functools.partial(session.on_attention, layer)
            context = AttentionValueRule.apply(
                probs,
                split(value),
                session.gates[layer],
                _recorder(session, layer) if session.record_head_relevance else None,
                callback,
            )
            return (context.transpose(1, 2).reshape(batch, seq, heads * dim), *args[1:])

        return hook

    def on_layer(layer: int) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            session.layer_outputs[layer] = output[0] if isinstance(output, tuple) else output

        return hook

    with eager_attention(model):
        try:
            handles.append(layout.embeddings.register_forward_hook(on_embeddings))
            for module in model.modules():
                if isinstance(module, nn.Linear):
                    handles.append(module.register_forward_hook(on_linear))
                elif isinstance(module, nn.LayerNorm):
                    if len(module.normalized_shape) != 1:
                        raise ValueError(f"LayerNorm over {module.normalized_shape} is not supported")
                    handles.append(module.register_forward_hook(on_layer_norm))
                elif id(module) in activation_ids:
                    handles.append(module.register_forward_hook(on_activation))
            for k, (_, consumer, _) in enumerate(layout.functional_activations):
                handles.append(consumer.register_forward_pre_hook(on_consumer(k)))
            for i, parts in enumerate(layout.attention):
                handles.append(parts.module.register_forward_pre_hook(on_attention_module(i), with_kwargs=True))
                handles.append(parts.out_proj.register_forward_pre_hook(on_out_proj(i, parts)))
                if layer_outputs:
                    handles.append(layout.layers[i].register_forward_hook(on_layer(i)))
            yield session
        finally:
            for handle in handles:
                handle.remove()


def model_inputs(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """Keyword arguments for the model's forward (DistilBERT takes no ``token_type_ids``)."""
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_type_ids is not None and uses_token_type_ids(model):
        inputs["token_type_ids"] = token_type_ids
    return inputs


@dataclass(frozen=True)
class Relevance:
    """LRP relevances of one batch.

    Attributes:
        logits: ``(batch, outputs)`` the model's outputs.
        input: ``(batch, seq, hidden)`` relevance at the encoder input ``x^(N)`` (embedding output),
            ``None`` when not asked for.
        attention: Per layer ``(batch, heads, seq, seq)`` relevance ``R(A)`` of the attention map,
            or empty when not asked for.
        layers: Per layer ``(batch, seq, hidden)`` relevance of its output, or empty.
        head_relevance: Per layer ``(before, after)`` ``(batch, heads)`` head-output relevance (entries
            are ``None`` unless asked for).
    """

    logits: torch.Tensor
    input: torch.Tensor | None
    attention: tuple[torch.Tensor, ...] = ()
    layers: tuple[torch.Tensor, ...] = ()
    head_relevance: tuple[tuple[torch.Tensor, torch.Tensor] | None, ...] = ()


def propagate_relevance(
    model: nn.Module,
    inputs: dict[str, torch.Tensor],
    targets: torch.Tensor,
    *,
    epsilon: float = DEFAULT_EPSILON,
    linear_rule: LinearRule = "epsilon",
    gates: Sequence[HeadGate | None] | None = None,
    attention_relevance: bool = False,
    layer_outputs: bool = False,
    input_relevance: bool = True,
    head_relevance: bool = False,
    on_attention: Callable[[int, torch.Tensor], None] | None = None,
) -> Relevance:
    """One LRP pass for a batch: relevance 1 at each row's target output, propagated to the input.

    Args:
        model: A supported encoder in eval mode.
        inputs: Forward keyword arguments (see :func:`model_inputs`), tensors ``(batch, seq)``.
        targets: ``(batch,)`` index of the explained output per row.
        epsilon: Stabiliser of the linear rules.
        linear_rule: ``epsilon`` or ``positive`` (Mask-LRP Eq. 4).
        gates: Per-layer head gates (Mask-LRP) or ``None``.
        attention_relevance: Also return ``R(A)`` per layer.
        layer_outputs: Also return each layer output's relevance (conservation checks).
        input_relevance: Return the input relevance; without it the backward pass stops at the
            lowest attention map (``Relevance.input`` is then ``None``).
        head_relevance: Also return each head's output relevance before and after its gate.
        on_attention: Called during the backward pass with ``(layer, R(A))`` for every layer (the
            input relevance is then computed as well, so that the pass reaches every layer).

    Returns:
        The :class:`Relevance` of the batch (detached).
    """
    with (
        frozen_parameters(model),
        torch.enable_grad(),
        lrp_rules(
            model,
            epsilon=epsilon,
            linear_rule=linear_rule,
            gates=gates,
            attention_relevance=attention_relevance,
            layer_outputs=layer_outputs,
            head_relevance=head_relevance,
            on_attention=on_attention,
        ) as session,
    ):
        logits = model(**inputs).logits
        selected = logits.gather(1, targets.view(-1, 1)).squeeze(1)  # (batch,)
        if session.embedding_output is None:
            raise RuntimeError("the embedding hook did not run; is this a supported encoder?")
        input_relevance = input_relevance or on_attention is not None
        wanted: list[torch.Tensor] = [session.embedding_output] if input_relevance else []
        if attention_relevance:
            wanted += [a for a in session.attention if a is not None]
        if layer_outputs:
            wanted += [h for h in session.layer_outputs if h is not None]
        # R^(0) = 1 at the target: the gradient seed is R / z (Gradient x Input form).
        seed = 1.0 / stabilised(selected.detach(), epsilon)
        grads = torch.autograd.grad(selected, wanted, grad_outputs=seed, allow_unused=True)
    n = len(session.layout.layers)
    emb = session.embedding_output
    offset = 1 if input_relevance else 0
    relevance_at_input = (emb * grads[0]).detach() if input_relevance else None
    attention: tuple[torch.Tensor, ...] = ()
    if attention_relevance:
        attention = tuple(
            (a * g).detach() if g is not None else torch.zeros_like(a)
            for a, g in zip(session.attention, grads[offset : offset + n], strict=True)  # type: ignore[arg-type]
        )
        offset += n
    layers: tuple[torch.Tensor, ...] = ()
    if layer_outputs:
        layers = tuple(
            (h * g).detach() if g is not None else torch.zeros_like(h)
            for h, g in zip(session.layer_outputs, grads[offset : offset + n], strict=True)  # type: ignore[arg-type]
        )
    return Relevance(logits.detach(), relevance_at_input, attention, layers, tuple(session.head_relevance))


def attention_gradients(
    model: nn.Module, inputs: dict[str, torch.Tensor], targets: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """``nabla A``: the ordinary gradient of each row's target output w.r.t. every attention map.

    Returns:
        Per layer ``(batch, heads, seq, seq)``.
    """
    embeddings = model.get_input_embeddings()
    forward = {k: v for k, v in inputs.items() if k != "input_ids"}
    with frozen_parameters(model), torch.enable_grad(), eager_attention(model):
        h0 = embeddings(inputs["input_ids"]).detach().requires_grad_(True)
        out = model(inputs_embeds=h0, output_attentions=True, **forward)
        selected = out.logits.gather(1, targets.view(-1, 1)).squeeze(1)
        attentions = tuple(out.attentions)
        if not attentions or any(a is None for a in attentions):
            raise AttentionUnavailableError("the model returned no attention weights; it must run eager attention")
        grads = torch.autograd.grad(selected.sum(), attentions)
    return tuple(g.detach() for g in grads)


def rollout_weights(gradient: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """``Abar = E_h[(nabla A * R(A))^+]`` of one layer (Mask-LRP Eq. 10 without ``+ I``), ``(batch, seq, seq)``."""
    return (gradient * relevance).clamp(min=0).mean(dim=1)


def rollout(weights: Sequence[torch.Tensor], row: int = 0) -> torch.Tensor:
    """``(batch, seq)`` row ``row`` of ``(I + W^(B)) ... (I + W^(1))``, built bottom-up as ``R <- R + W R``."""
    first = weights[0]
    batch, seq, _ = first.shape
    result = torch.eye(seq, dtype=first.dtype, device=first.device).expand(batch, seq, seq)
    for w in weights:
        result = result + w @ result
    return result[:, row, :]


def relevance_rollout(
    gradients: Sequence[torch.Tensor], relevances: Sequence[torch.Tensor], row: int = 0
) -> torch.Tensor:
    """Rollout of gradient-weighted attention relevance (Chefer et al. 2021; Mask-LRP Eq. 10-11).

    Per layer ``Abar = E_h[(nabla A * R(A))^+]``, then from the bottom layer up ``R <- R + Abar R``
    starting from the identity, i.e. ``R = (I + Abar^(B)) ... (I + Abar^(1))``.

    Args:
        gradients: Per layer ``(batch, heads, seq, seq)`` attention gradients.
        relevances: Per layer ``(batch, heads, seq, seq)`` attention relevances.
        row: The token whose row is returned ([CLS] = 0).

    Returns:
        ``(batch, seq)`` the rollout's row ``row``.
    """
    if len(gradients) != len(relevances):
        raise ValueError(f"{len(gradients)} attention gradients but {len(relevances)} attention relevances")
    return rollout([rollout_weights(g, r) for g, r in zip(gradients, relevances, strict=True)], row)

"""LDAV's issue-18 variants: the contrast score by hand, vectors in a hidden layer's space, a larger
word-embedding learning rate; the paper's score unchanged."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import save_tiny_model
from xattr.ldav import LdavError, ldav_token_scores, load_ldav_vectors
from xattr.ldav.vectors import ldav_vectors_for
from xattr.methods import MethodContext, get_method
from xattr.models.encoding import collate, encode_texts
from xattr.models.loading import load_model
from xattr.training.recipe import parameter_groups
from xattr.training.trainer import LdavConfig, TrainConfig, TrainingRows, train_model

TEXTS = ["the good movie was fun", "bad plot", "awful acting , boring film"]


def _znorm_negated(alpha: np.ndarray) -> np.ndarray:
    return -(alpha - alpha.mean()) / alpha.std()


def test_contrast_score_by_hand() -> None:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 4, generator=generator, dtype=torch.float64)
    z = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    content = torch.tensor([[False, True, True, True, False], [False, True, True, False, False]])
    targets = [2, 0]
    others = torch.stack([z[[j for j in range(3) if j != t]] for t in targets])
    ours = ldav_token_scores(x, content, z[targets], None, others)
    for row, t in enumerate(targets):
        keep = content[row].numpy()
        tokens = x[row].numpy()[keep]
        zs = z.numpy()
        own = np.linalg.norm(tokens - zs[t], axis=1)
        rest = np.mean([np.linalg.norm(tokens - zs[j], axis=1) for j in range(3) if j != t], axis=0)
        np.testing.assert_allclose(ours[row].numpy()[keep], _znorm_negated(own - rest), rtol=1e-12)
        assert (ours[row].numpy()[~keep] == 0).all()
    # without other vectors it is Eq. 4-5
    plain = ldav_token_scores(x, content, z[targets])
    own0 = np.linalg.norm(x[0].numpy()[content[0].numpy()] - z[2].numpy(), axis=1)
    np.testing.assert_allclose(plain[0].numpy()[content[0].numpy()], _znorm_negated(own0), rtol=1e-12)


def _rows(n: int) -> TrainingRows:
    words = ["good", "fun", "great", "bad", "awful", "boring"]
    texts = [f"the {words[i % 6]} movie was {words[(i * 5) % 6]}" for i in range(n)]
    return TrainingRows(texts, labels=[int(i % 6 >= 3) for i in range(n)])


def _config(**changes) -> TrainConfig:
    ldav = LdavConfig(enabled=True, rho1=1.0, rho2=1.0, learning_rate=3e-3, **changes.pop("ldav", {}))
    return TrainConfig(epochs=1, batch_size=8, max_length=16, patience=None, ldav=ldav, **changes)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ldav-variants")
    base = save_tiny_model(root / "base", num_labels=2)
    out = {}
    for name, config in {
        "paper": _config(),
        "hidden": _config(ldav={"layer": 1}),
    }.items():
        out[name] = train_model(
            base, _rows(32), root / name, task="classification", num_labels=2, config=config
        ).output_dir
    out["base"] = base
    return out


def test_contrast_method_uses_the_other_classes(models: dict[str, Path]) -> None:
    loaded = load_model(models["paper"], device="cpu")
    encoded = encode_texts(loaded.tokenizer, TEXTS, max_length=16)
    vectors = ldav_vectors_for(loaded)
    context = MethodContext(corpus=encoded, ldav_vectors=vectors)
    batch = collate(encoded, [0, 1, 2], 0)
    targets = torch.tensor([1, 0, 1])
    ours = get_method("ldav", {"score": "contrast"}).attribute_batch(loaded, batch, targets, context)
    paper = get_method("ldav").attribute_batch(loaded, batch, targets, context)
    table = loaded.model.get_input_embeddings().weight.detach().double()
    z = vectors.vectors.double().numpy()
    for row, t in enumerate(targets.tolist()):
        text = encoded[row]
        keep = ~np.array(text.special)
        tokens = table[list(text.input_ids)].numpy()[keep]
        own = np.linalg.norm(tokens - z[t], axis=1)
        other = np.linalg.norm(tokens - z[1 - t], axis=1)
        np.testing.assert_allclose(ours[row, : len(text)].numpy()[keep], _znorm_negated(own - other), atol=1e-5)
        np.testing.assert_allclose(paper[row, : len(text)].numpy()[keep], _znorm_negated(own), atol=1e-5)


def test_hidden_space_vectors_are_trained_saved_and_scored_in_that_layer(models: dict[str, Path]) -> None:
    found = load_ldav_vectors(models["hidden"])
    assert found.layer == 1 and load_ldav_vectors(models["paper"]).layer is None
    loaded = load_model(models["hidden"], device="cpu")
    encoded = encode_texts(loaded.tokenizer, TEXTS, max_length=16)
    context = MethodContext(corpus=encoded, ldav_vectors=ldav_vectors_for(loaded))
    batch = collate(encoded, [0, 1, 2], 0)
    targets = torch.tensor([0, 1, 1])
    ours = get_method("ldav", {"space": "hidden"}).attribute_batch(loaded, batch, targets, context)
    z = found.vectors.double().numpy()
    for row, t in enumerate(targets.tolist()):
        text = encoded[row]
        ids = torch.tensor([list(text.input_ids)])
        with torch.no_grad():
            states = loaded.model(input_ids=ids, output_hidden_states=True).hidden_states[1][0].double().numpy()
        keep = ~np.array(text.special)
        alpha = np.linalg.norm(states[keep] - z[t], axis=1)
        np.testing.assert_allclose(ours[row, : len(text)].numpy()[keep], _znorm_negated(alpha), atol=1e-5)
    # the space must be the vectors' space
    with pytest.raises(LdavError, match="trained on hidden layer 1"):
        get_method("ldav").attribute_batch(loaded, batch, targets, context)
    paper = load_model(models["paper"], device="cpu")
    paper_context = MethodContext(corpus=encoded, ldav_vectors=ldav_vectors_for(paper))
    with pytest.raises(LdavError, match="trained on the input word embeddings"):
        get_method("ldav", {"space": "hidden"}).attribute_batch(paper, batch, targets, paper_context)


def test_hidden_space_vectors_start_at_the_class_means_of_that_layer(models: dict[str, Path], tmp_path: Path) -> None:
    """One optimiser step at a tiny learning rate: the vectors are still (almost) the per-class mean layer-1 states."""
    rows = _rows(16)
    config = dataclasses.replace(
        _config(ldav={"layer": 1}), learning_rate=1e-12, head_learning_rate=1e-12, batch_size=16
    )
    config = dataclasses.replace(config, ldav=dataclasses.replace(config.ldav, learning_rate=1e-12))
    out = train_model(models["base"], rows, tmp_path / "m", task="classification", num_labels=2, config=config)
    found = load_ldav_vectors(out.output_dir).vectors.double()
    base = load_model(models["base"], device="cpu")
    encoded = encode_texts(base.tokenizer, list(rows.texts), max_length=16)
    sums = torch.zeros(2, found.shape[1], dtype=torch.float64)
    for text, label in zip(encoded, rows.labels, strict=True):
        with torch.no_grad():
            states = base.model(input_ids=torch.tensor([list(text.input_ids)]), output_hidden_states=True)
        keep = ~torch.tensor(text.special)
        sums[int(label)] += states.hidden_states[1][0][keep].double().mean(0)
    counts = torch.tensor([sum(int(label) == k for label in rows.labels) for k in (0, 1)], dtype=torch.float64)
    assert counts.tolist() == [9.0, 7.0]
    np.testing.assert_allclose(found.numpy(), (sums / counts[:, None]).numpy(), atol=1e-4)


def test_embedding_learning_rate_gets_its_own_group(models: dict[str, Path]) -> None:
    model = load_model(models["base"], device="cpu").model
    plain = parameter_groups(model, learning_rate=1e-4, head_learning_rate=1e-3, weight_decay=0.01)
    split = parameter_groups(
        model, learning_rate=1e-4, head_learning_rate=1e-3, weight_decay=0.01, embedding_learning_rate=5e-2
    )
    words = model.get_input_embeddings().weight
    assert split[-1] == {"params": [words], "lr": 5e-2, "weight_decay": 0.01}
    assert not any(p is words for g in split[:-1] for p in g["params"])

    # every other parameter keeps its group and learning rate
    def by_id(groups):
        return {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"] if p is not words}

    assert by_id(split) == by_id(plain)
    assert any(p is words for g in plain for p in g["params"])
    with pytest.raises(ValueError, match="embedding_learning_rate"):
        TrainConfig(embedding_learning_rate=0.0)
    with pytest.raises(ValueError, match="LdavConfig.layer"):
        LdavConfig(layer=0)


def test_a_larger_embedding_learning_rate_moves_the_embeddings_more(models: dict[str, Path], tmp_path: Path) -> None:
    start = load_model(models["base"], device="cpu").model.get_input_embeddings().weight.detach().clone()
    moved = {}
    for name, rate in {"encoder": None, "embeddings": 1e-2}.items():
        config = _config(embedding_learning_rate=rate, learning_rate=1e-4)
        out = train_model(
            models["base"], _rows(32), tmp_path / name, task="classification", num_labels=2, config=config
        )
        weight = load_model(out.output_dir, device="cpu").model.get_input_embeddings().weight.detach()
        moved[name] = float((weight - start).norm())
    assert moved["embeddings"] > 10 * moved["encoder"] > 0

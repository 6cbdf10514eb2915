"""LDAV: loss terms by hand, token scores by hand, vectors saved and loaded exactly, refusals, and
a tiny model trained with LDAV whose scores rank the class-deciding words first."""

from __future__ import annotations

import math
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from tests.conftest import save_tiny_model
from xattr.ldav import (
    ConceptError,
    LdavError,
    LdavVectors,
    class_vector_correlation,
    class_vector_separation,
    concept_scores,
    ldav_loss_terms,
    ldav_token_scores,
    load_ldav_vectors,
    pooled_input_embeddings,
    save_ldav_vectors,
    sentence_vector_distance,
)
from xattr.ldav.vectors import ldav_vectors_for
from xattr.methods import MethodContext, attribute_corpus, get_method
from xattr.models.encoding import collate, encode_texts
from xattr.models.forward import predict_logits
from xattr.models.loading import load_model
from xattr.training.trainer import LdavConfig, TrainConfig, TrainingRows, train_model

POSITIVE, NEGATIVE = ["great", "good", "fun"], ["awful", "bad", "boring"]
FILLER = ["the", "movie", "plot", "acting", "film", "was"]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _vectors(k: int = 3, d: int = 4, *, pair: bool = False, seed: int = 0) -> LdavVectors:
    generator = torch.Generator().manual_seed(seed)
    return LdavVectors(
        vectors=torch.randn(k, d, generator=generator),
        pair_product=pair,
        rho1=0.5,
        rho2=0.25,
        distance="cosine",
        vector_class="predicted",
        labels=tuple(f"class-{j}" for j in range(k)),
    )


# --- loss terms on toy tensors, by hand -------------------------------------------------------


def test_pooled_embedding_is_the_mean_of_content_tokens() -> None:
    embeddings = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [9.0, 9.0]]])
    content = torch.tensor([[True, True, False]])
    assert pooled_input_embeddings(embeddings, content).tolist() == [[2.0, 1.0]]


def test_pair_text_vector_is_the_product_of_segment_means() -> None:
    embeddings = torch.tensor([[[9.0, 9.0], [1.0, 2.0], [3.0, 4.0], [9.0, 9.0], [2.0, -1.0], [9.0, 9.0]]])
    content = torch.tensor([[False, True, True, False, True, False]])
    segments = torch.tensor([[-1, 0, 0, -1, 1, -1]])
    # segment means (2, 3) and (2, -1): product (4, -3)  (Section 4.5)
    assert pooled_input_embeddings(embeddings, content, segments).tolist() == [[4.0, -3.0]]


def test_empty_text_cannot_be_pooled() -> None:
    with pytest.raises(ValueError, match="row 1 has no content token"):
        pooled_input_embeddings(torch.ones(2, 2, 3), torch.tensor([[True, False], [False, False]]))


def test_loss_terms_equal_their_formulas() -> None:
    logits = torch.tensor([[0.2, 1.5, -0.3]], dtype=torch.float64)  # predicted class 1, gold class 0
    labels = torch.tensor([0])
    pooled = torch.tensor([[2.0, 1.0]], dtype=torch.float64)
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    terms = ldav_loss_terms(logits, labels, pooled, z, rho1=0.5, rho2=0.25)
    log_sum = math.log(math.exp(0.2) + math.exp(1.5) + math.exp(-0.3))
    assert terms.l1.item() == pytest.approx(log_sum - 0.2, abs=1e-12)  # -log p(gold)
    assert terms.l2.item() == pytest.approx(0.5 * (1 - 1 / math.sqrt(5)), abs=1e-12)  # Eq. 2, z of class 1
    # Eq. 3: ordered pairs (0,1) 2, (0,2) 1, (1,2) 1, both orders: 8
    assert terms.l3.item() == pytest.approx(0.25 * 8.0, abs=1e-12)
    assert terms.total.item() == pytest.approx(terms.l1.item() + terms.l2.item() - terms.l3.item(), abs=1e-12)
    gold = ldav_loss_terms(logits, labels, pooled, z, rho1=0.5, rho2=0.25, vector_class="label")
    assert gold.l2.item() == pytest.approx(0.5 * (1 - 2 / math.sqrt(5)), abs=1e-12)
    euclid = ldav_loss_terms(logits, labels, pooled, z, rho1=0.5, rho2=0.25, distance="euclidean")
    assert euclid.l2.item() == pytest.approx(0.5 * 2.0, abs=1e-12)  # ||(2,1) - (0,1)||


def test_l2_is_the_batch_mean_and_separation_matches_a_loop() -> None:
    generator = torch.Generator().manual_seed(3)
    pooled = torch.randn(5, 6, generator=generator, dtype=torch.float64)
    z = torch.randn(4, 6, generator=generator, dtype=torch.float64)
    chosen = torch.tensor([0, 3, 3, 1, 2])
    expected = np.mean(
        [1 - float(pooled[b] @ z[c]) / float(pooled[b].norm() * z[c].norm()) for b, c in enumerate(chosen)]
    )
    assert sentence_vector_distance(pooled, z[chosen], "cosine").mean().item() == pytest.approx(expected, abs=1e-12)
    loop = sum(float(((z[i] - z[j]) ** 2).sum()) for i in range(4) for j in range(4))
    assert class_vector_separation(z).item() == pytest.approx(loop, abs=1e-10)


# --- token scores, by hand -------------------------------------------------------------------


def test_token_scores_are_negated_z_scores_of_euclidean_distances() -> None:
    embeddings = torch.tensor([[[0.0, 0.0], [3.0, 4.0], [0.0, 1.0], [6.0, 8.0], [5.0, 5.0]]], dtype=torch.float64)
    content = torch.tensor([[False, True, True, True, False]])
    z = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    scores = ldav_token_scores(embeddings, content, z)
    alpha = np.array([5.0, 1.0, 10.0])  # Eq. 4
    expected = -(alpha - alpha.mean()) / alpha.std()  # Eq. 5, population std
    assert scores[0, 1:4].numpy() == pytest.approx(expected, abs=1e-12)
    assert scores[0, 0].item() == 0.0 and scores[0, 4].item() == 0.0


def test_pair_token_scores_multiply_by_the_other_segment_mean() -> None:
    embeddings = torch.tensor([[[9.0, 9.0], [1.0, 2.0], [3.0, 0.0], [9.0, 9.0], [2.0, 1.0], [9.0, 9.0]]])
    embeddings = embeddings.double()
    content = torch.tensor([[False, True, True, False, True, False]])
    segments = torch.tensor([[-1, 0, 0, -1, 1, -1]])
    z = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    scores = ldav_token_scores(embeddings, content, z, segments)
    premise_mean, hypothesis_mean = np.array([2.0, 1.0]), np.array([2.0, 1.0])
    products = [np.array([1.0, 2.0]) * hypothesis_mean, np.array([3.0, 0.0]) * hypothesis_mean]
    products.append(np.array([2.0, 1.0]) * premise_mean)
    alpha = np.array([np.linalg.norm(p - np.array([1.0, 1.0])) for p in products])
    expected = -(alpha - alpha.mean()) / alpha.std()
    assert scores[0, [1, 2, 4]].numpy() == pytest.approx(expected, abs=1e-12)


def test_equal_distances_score_zero() -> None:
    scores = ldav_token_scores(torch.ones(1, 3, 2), torch.tensor([[True, True, True]]), torch.zeros(1, 2))
    assert scores.tolist() == [[0.0, 0.0, 0.0]]


# --- saved and loaded with the model ---------------------------------------------------------


def test_vectors_save_and_load_exactly(tmp_path: Path) -> None:
    vectors = _vectors(3, 7, pair=True)
    save_ldav_vectors(tmp_path, vectors)
    loaded = load_ldav_vectors(tmp_path)
    assert torch.equal(loaded.vectors, vectors.vectors)
    assert loaded.metadata() == vectors.metadata()
    with pytest.raises(FileExistsError, match="never overwritten"):
        save_ldav_vectors(tmp_path, vectors)


def test_scoring_refuses_a_model_trained_without_ldav(tiny_classifier_dir: Path) -> None:
    loaded = load_model(tiny_classifier_dir, device="cpu")
    encoded = encode_texts(loaded.tokenizer, ["good movie"], max_length=16)
    with pytest.raises(LdavError, match="trained without LDAV"):
        attribute_corpus(get_method("ldav"), loaded, encoded, [[0]])


def test_scoring_refuses_a_regression_model(tiny_regressor_dir: Path) -> None:
    loaded = load_model(tiny_regressor_dir, device="cpu")
    encoded = encode_texts(loaded.tokenizer, ["good movie"], max_length=16)
    with pytest.raises(LdavError, match="regression model"):
        attribute_corpus(get_method("ldav"), loaded, encoded, [[0]])


def test_scoring_refuses_vectors_of_another_dimension(tmp_path: Path) -> None:
    directory = save_tiny_model(tmp_path / "model", num_labels=2)
    save_ldav_vectors(directory, _vectors(2, 7))  # the tiny model's embeddings have 32 dimensions
    loaded = load_model(directory, device="cpu")
    encoded = encode_texts(loaded.tokenizer, ["good movie"], max_length=16)
    with pytest.raises(LdavError, match="dimension 7.*dimension 32"):
        attribute_corpus(get_method("ldav"), loaded, encoded, [[0]])
    with pytest.raises(LdavError, match="ldav needs LDAV vectors in its MethodContext"):
        get_method("ldav").attribute_batch(
            loaded, collate(encoded, [0], 0), torch.tensor([0]), MethodContext(corpus=encoded)
        )


def test_ldav_training_is_refused_for_regression(tiny_regressor_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="LDAV is defined for single-label classification"):
        train_model(
            tiny_regressor_dir,
            TrainingRows(["good movie", "bad movie"], labels=[1.0, 2.0]),
            tmp_path / "out",
            task="regression",
            num_labels=1,
            config=TrainConfig(epochs=1, patience=None, ldav=LdavConfig(enabled=True)),
        )


# --- a tiny model trained with LDAV ----------------------------------------------------------


def _synthetic(n: int, seed: int) -> TrainingRows:
    """Two classes decided by one word each text draws from POSITIVE (class 0) or NEGATIVE (class 1);
    the other five words are fillers shared by both classes."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        words = [rng.choice(FILLER) for _ in range(5)]
        words.insert(rng.randrange(6), rng.choice(POSITIVE if i % 2 == 0 else NEGATIVE))
        texts.append(" ".join(words))
        labels.append(i % 2)
    return TrainingRows(texts, labels=labels)


@pytest.fixture(scope="module")
def ldav_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ldav")
    base = save_tiny_model(root / "base", num_labels=2)
    config = TrainConfig(
        epochs=10,
        batch_size=16,
        learning_rate=3e-3,
        head_learning_rate=1e-2,
        max_length=16,
        patience=None,
        ldav=LdavConfig(enabled=True, rho1=1.0, rho2=1.0, learning_rate=3e-3),
    )
    result = train_model(
        base,
        _synthetic(160, 0),
        root / "model",
        task="classification",
        num_labels=2,
        validation=_synthetic(40, 1),
        id2label={0: "positive", 1: "negative"},
        config=config,
    )
    assert result.epochs_run == 10
    return result.output_dir


def test_ldav_scores_rank_the_deciding_words_first(ldav_model: Path) -> None:
    loaded = load_model(ldav_model, device="cpu")
    texts = _synthetic(40, 2).texts
    encoded = encode_texts(loaded.tokenizer, texts, max_length=16)
    method = get_method("ldav")
    context = MethodContext(corpus=encoded, ldav_vectors=ldav_vectors_for(loaded))
    predicted = torch.tensor(predict_logits(loaded, encoded).argmax(axis=1))
    scores = method.attribute_batch(loaded, collate(encoded, list(range(len(texts))), 0), predicted, context)
    top = [loaded.tokenizer.convert_ids_to_tokens(e.input_ids[int(scores[i].argmax())]) for i, e in enumerate(encoded)]
    assert sum(t in POSITIVE + NEGATIVE for t in top) >= 36, top
    # an untrained copy with the same vectors does not: the ranking comes from training
    fresh = tmp_copy = ldav_model.parent / "untrained"
    if not fresh.exists():
        save_tiny_model(tmp_copy, num_labels=2)
        shutil.copy(ldav_model / "ldav_vectors.safetensors", tmp_copy)
        shutil.copy(ldav_model / "ldav.json", tmp_copy)
    untrained = load_model(fresh, device="cpu")
    context = MethodContext(corpus=encoded, ldav_vectors=ldav_vectors_for(untrained))
    untrained_scores = method.attribute_batch(
        untrained, collate(encoded, list(range(len(texts))), 0), predicted, context
    )
    untrained_top = [
        untrained.tokenizer.convert_ids_to_tokens(e.input_ids[int(untrained_scores[i].argmax())])
        for i, e in enumerate(encoded)
    ]
    assert sum(t in POSITIVE + NEGATIVE for t in untrained_top) < 30


def test_saved_vectors_fit_the_model_and_are_what_scoring_uses(ldav_model: Path) -> None:
    loaded = load_model(ldav_model, device="cpu")
    found = load_ldav_vectors(ldav_model)
    assert found.vectors.shape == (2, 32)
    assert found.labels == ("positive", "negative")
    assert (found.rho1, found.rho2, found.distance, found.vector_class) == (1.0, 1.0, "cosine", "predicted")
    encoded = encode_texts(loaded.tokenizer, ["the good movie"], max_length=16)
    (result,) = attribute_corpus(get_method("ldav"), loaded, encoded, [[1]])  # reads the vectors from the model
    scores = torch.from_numpy(result.scores).unsqueeze(0)
    embeddings = loaded.model.get_input_embeddings().weight[list(encoded[0].input_ids[1:4])].detach().double()
    alpha = (embeddings - found.vectors[1].double()).norm(dim=1).numpy()
    assert scores[0, 1:4].double().numpy() == pytest.approx(-(alpha - alpha.mean()) / alpha.std(), abs=1e-5)


def test_concept_scores_against_every_class(ldav_model: Path) -> None:
    loaded = load_model(ldav_model, device="cpu")
    table = concept_scores(loaded, {"praise": ["great", "good", "fun"], "complaint": "awful bad boring"})
    assert list(table.columns[:5]) == ["concept", "pieces", "unknown_pieces", "positive", "negative"]
    # two classes: z-normalised over classes gives exactly +1 and -1 (Section 4.8)
    assert np.abs(table[["positive", "negative"]].to_numpy()) == pytest.approx(np.ones((2, 2)), abs=1e-9)
    vectors = load_ldav_vectors(ldav_model).vectors.double()
    table_ = loaded.model.get_input_embeddings().weight.detach().double()
    ids = loaded.tokenizer(["great good fun"], add_special_tokens=False)["input_ids"][0]
    concept = table_[ids].mean(0)
    expected = (concept - vectors).norm(dim=1).numpy()
    assert table.loc[0, ["distance:positive", "distance:negative"]].to_numpy(float) == pytest.approx(expected, abs=1e-5)
    assert table.loc[0, "positive"] == pytest.approx(1.0 if expected[0] < expected[1] else -1.0, abs=1e-9)


def test_concept_with_no_known_tokens_is_refused(ldav_model: Path) -> None:
    loaded = load_model(ldav_model, device="cpu")
    with pytest.raises(ConceptError, match="'zzyzx qwv' has no word piece the model knows"):
        concept_scores(loaded, ["good", "zzyzx qwv"])


def test_class_vector_correlation_is_pearson_over_dimensions() -> None:
    vectors = _vectors(3, 5)
    frame = class_vector_correlation(vectors)
    z = vectors.vectors.double().numpy()
    a, b = z[0] - z[0].mean(), z[1] - z[1].mean()
    assert frame.loc["class-0", "class-1"] == pytest.approx(float(a @ b / np.sqrt((a @ a) * (b @ b))), abs=1e-12)
    assert list(frame.index) == ["class-0", "class-1", "class-2"]
    assert F.cosine_similarity(torch.tensor(a), torch.tensor(b), dim=0).item() == pytest.approx(
        frame.loc["class-0", "class-1"], abs=1e-12
    )


def test_pair_model_trains_product_vectors_and_scores_tokens_against_them(tmp_path: Path) -> None:
    base = save_tiny_model(tmp_path / "base", num_labels=2)
    rows = TrainingRows(
        ["good movie", "bad plot", "great film", "awful acting"] * 4,
        pairs=["the plot", "the film", "a movie", "the acting"] * 4,
        labels=[0, 1, 0, 1] * 4,
    )
    result = train_model(
        base,
        rows,
        tmp_path / "pair",
        task="pair_classification",
        num_labels=2,
        config=TrainConfig(epochs=1, batch_size=8, max_length=16, patience=None, ldav=LdavConfig(enabled=True)),
    )
    found = load_ldav_vectors(result.output_dir)
    assert found.pair_product
    loaded = load_model(result.output_dir, device="cpu")
    encoded = encode_texts(loaded.tokenizer, ["good movie"], ["the plot"], max_length=16)
    context = MethodContext(corpus=encoded, ldav_vectors=ldav_vectors_for(loaded))
    scores = (
        get_method("ldav").attribute_batch(loaded, collate(encoded, [0], 0), torch.tensor([0]), context)[0].double()
    )
    ids = list(encoded[0].input_ids)  # [CLS] good movie [SEP] the plot [SEP]
    table = loaded.model.get_input_embeddings().weight.detach().double()
    first, second = table[ids[1:3]], table[ids[4:6]]
    tokens = torch.cat([first * second.mean(0), second * first.mean(0)])
    alpha = (tokens - found.vectors[0].double()).norm(dim=1).numpy()
    assert scores[[1, 2, 4, 5]].numpy() == pytest.approx(-(alpha - alpha.mean()) / alpha.std(), abs=1e-5)
    assert scores[[0, 3, 6]].tolist() == [0.0, 0.0, 0.0]


def test_ldav_training_is_refused_for_multi_label(tiny_classifier_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="task 'multi_label' cannot be trained with ldav.enabled"):
        train_model(
            tiny_classifier_dir,
            TrainingRows(["good movie", "bad movie"], label_sets=[[0], [1]]),
            tmp_path / "out",
            task="multi_label",
            num_labels=2,
            config=TrainConfig(epochs=1, patience=None, ldav=LdavConfig(enabled=True)),
        )

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest

from storage.errors import StorageError
from storage.schemas import (
    KINDS,
    SCHEMA_VERSION,
    SCHEMA_VERSIONS,
    check_schema,
    conform_table,
    embeddings_schema,
    require_kind,
    schema_for,
)


def _meta(kind: str) -> dict[bytes, bytes]:
    return {b"xattr.kind": kind.encode(), b"xattr.schema_version": b"1"}


def _req(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=False)


EXPECTED = {
    "corpus": pa.schema(
        [
            _req("doc_id", pa.string()),
            _req("text", pa.string()),
            pa.field("text_pair", pa.string()),
            pa.field("label", pa.float64()),
            pa.field("label_set", pa.list_(pa.field("element", pa.int32()))),
            pa.field("group", pa.string()),
            pa.field(
                "gold_spans",
                pa.list_(
                    pa.field(
                        "element",
                        pa.struct([("segment", pa.int8()), ("start", pa.int32()), ("end", pa.int32())]),
                    )
                ),
            ),
            pa.field("gold_word_scores", pa.list_(pa.field("element", pa.float64()))),
            pa.field("gold_unlocated", pa.int32()),
            pa.field("label_name", pa.string()),
        ],
        metadata=_meta("corpus"),
    ),
    "neighbours": pa.schema(
        [
            _req("doc_id", pa.string()),
            _req("rank", pa.int32()),
            _req("neighbour_id", pa.string()),
            _req("distance", pa.float32()),
            _req("position", pa.int64()),
            _req("neighbour_position", pa.int64()),
        ],
        metadata=_meta("neighbours"),
    ),
    "head_statistics": pa.schema(
        [
            _req("layer", pa.int32()),
            _req("head", pa.int32()),
            _req("kind", pa.string()),
            _req("key", pa.string()),
            _req("frequency", pa.float64()),
            pa.field("baseline", pa.float64()),
            _req("count", pa.int64()),
        ],
        metadata=_meta("head_statistics"),
    ),
    "token_attributions": pa.schema(
        [
            _req("doc_id", pa.string()),
            _req("method", pa.string()),
            _req("target", pa.int32()),
            _req("token_index", pa.int32()),
            _req("token", pa.string()),
            _req("word_index", pa.int32()),
            _req("char_start", pa.int32()),
            _req("char_end", pa.int32()),
            _req("score", pa.float32()),
        ],
        metadata=_meta("token_attributions"),
    ),
    "evaluation": pa.schema(
        [
            _req("method", pa.string()),
            pa.field("doc_id", pa.string()),
            _req("metric", pa.string()),
            pa.field("fraction", pa.float64()),
            _req("value", pa.float64()),
            _req("replacement", pa.string()),
        ],
        metadata=_meta("evaluation"),
    ),
    "predictions": pa.schema(
        [
            _req("doc_id", pa.string()),
            _req("logits", pa.list_(pa.field("element", pa.float64()))),
            pa.field("probabilities", pa.list_(pa.field("element", pa.float64()))),
            pa.field("predicted_id", pa.int32()),
            pa.field("predicted_label", pa.string()),
            pa.field("predicted_probability", pa.float64()),
            pa.field("gold_id", pa.int32()),
            pa.field("gold_label", pa.string()),
            pa.field("predicted_ids", pa.list_(pa.field("element", pa.int32()))),
            pa.field("predicted_labels", pa.list_(pa.field("element", pa.string()))),
            pa.field("gold_ids", pa.list_(pa.field("element", pa.int32()))),
            pa.field("gold_labels", pa.list_(pa.field("element", pa.string()))),
            pa.field("predicted_value", pa.float64()),
            pa.field("gold_value", pa.float64()),
        ],
        metadata=_meta("predictions"),
    ),
    "method_verdicts": pa.schema(
        [
            _req("method", pa.string()),
            _req("reference", pa.string()),
            _req("metric", pa.string()),
            _req("better", pa.string()),
            _req("difference", pa.float64()),
            _req("p_value", pa.float64()),
            _req("better_than_reference", pa.bool_()),
            _req("alpha", pa.float64()),
            _req("primary", pa.bool_()),
        ],
        metadata=_meta("method_verdicts"),
    ),
    "class_drivers": pa.schema(
        [
            _req("class_id", pa.int64()),
            _req("class", pa.string()),
            _req("driver", pa.string()),
            _req("kind", pa.string()),
            _req("rank", pa.int64()),
            _req("texts", pa.int64()),
            _req("class_texts", pa.int64()),
            pa.field("frequency", pa.float64()),
            pa.field("mean_attribution", pa.float64()),
            pa.field("attribution_ci_low", pa.float64()),
            pa.field("attribution_ci_high", pa.float64()),
            _req("masked", pa.bool_()),
            pa.field("mean_effect", pa.float64()),
            pa.field("effect_ci_low", pa.float64()),
            pa.field("effect_ci_high", pa.float64()),
            pa.field("mean_probability", pa.float64()),
            _req("method", pa.string()),
        ],
        metadata=_meta("class_drivers"),
    ),
    "tokens": pa.schema(
        [
            _req("doc_id", pa.string()),
            _req("length", pa.int32()),
            _req("truncated", pa.bool_()),
            _req("input_ids", pa.list_(pa.field("element", pa.int32()))),
            _req("token_type_ids", pa.list_(pa.field("element", pa.int8()))),
            _req("char_start", pa.list_(pa.field("element", pa.int32()))),
            _req("char_end", pa.list_(pa.field("element", pa.int32()))),
            _req("segments", pa.list_(pa.field("element", pa.int8()))),
            _req("word_index", pa.list_(pa.field("element", pa.int32()))),
            _req("special", pa.list_(pa.field("element", pa.bool_()))),
        ],
        metadata=_meta("tokens"),
    ),
}


def test_kinds_and_versions() -> None:
    assert KINDS == (
        "corpus",
        "embeddings",
        "neighbours",
        "head_statistics",
        "token_attributions",
        "evaluation",
        "price_drivers",
        "predictions",
        "method_verdicts",
        "class_drivers",
        "tokens",
    )
    assert SCHEMA_VERSION == 1
    assert SCHEMA_VERSIONS == {kind: 1 for kind in KINDS}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_schema_for_plain_kinds(kind: str) -> None:
    schema = schema_for(kind)
    assert schema.equals(EXPECTED[kind], check_metadata=True)
    assert schema.metadata == _meta(kind)


def test_schema_for_embeddings() -> None:
    expected = pa.schema(
        [
            _req("doc_id", pa.string()),
            _req("embedding", pa.list_(pa.field("element", pa.float32()), 7)),
        ],
        metadata=_meta("embeddings"),
    )
    assert schema_for("embeddings", dim=7).equals(expected, check_metadata=True)
    assert embeddings_schema(7).equals(expected, check_metadata=True)


def test_schema_for_unknown_kind_lists_valid_kinds() -> None:
    with pytest.raises(StorageError) as info:
        schema_for("vectors")
    assert info.value.artifact == "vectors"
    assert info.value.problem == (
        "unknown artifact kind; valid kinds: corpus, embeddings, neighbours, "
        "head_statistics, token_attributions, evaluation, price_drivers, predictions, method_verdicts, class_drivers, "
        "tokens"
    )


def test_schema_for_embeddings_requires_dim() -> None:
    with pytest.raises(StorageError, match="requires the parameter dim"):
        schema_for("embeddings")


@pytest.mark.parametrize("dim", [0, -3, True, 2.0, "4"])
def test_embeddings_schema_rejects_bad_dim(dim: object) -> None:
    with pytest.raises(StorageError, match="dim must be a positive integer"):
        schema_for("embeddings", dim=dim)


def test_schema_for_rejects_unexpected_parameters() -> None:
    with pytest.raises(StorageError, match=r"unexpected schema parameter\(s\): dim"):
        schema_for("corpus", dim=3)
    with pytest.raises(StorageError, match=r"unexpected schema parameter\(s\): width"):
        schema_for("embeddings", dim=3, width=2)


def test_require_kind() -> None:
    require_kind("corpus", artifact="a")
    with pytest.raises(StorageError, match="unknown artifact kind 'x'; valid kinds: corpus,"):
        require_kind("x", artifact="a")


def test_storage_error_message_attributes_and_pickle() -> None:
    error = StorageError("run/stage/x.parquet", "it broke")
    assert str(error) == "artifact 'run/stage/x.parquet': it broke"
    assert error.artifact == "run/stage/x.parquet"
    assert error.problem == "it broke"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.artifact, copy.problem, str(copy)) == (error.artifact, error.problem, str(error))


def test_conform_reorders_casts_and_fills_nullable_columns() -> None:
    table = pa.table(
        {
            "distance": pa.array([0.5, 1.25], pa.float64()),
            "neighbour_id": ["b", "a"],
            "rank": pa.array([1, 2], pa.int64()),
            "doc_id": ["a", "b"],
            "neighbour_position": pa.array([1, 0], pa.int32()),
            "position": [0, 1],
        }
    )
    result = conform_table(table, schema_for("neighbours"), artifact="n")
    assert result.schema.equals(EXPECTED["neighbours"], check_metadata=True)
    assert result.to_pylist() == [
        {"doc_id": "a", "rank": 1, "neighbour_id": "b", "distance": 0.5, "position": 0, "neighbour_position": 1},
        {"doc_id": "b", "rank": 2, "neighbour_id": "a", "distance": 1.25, "position": 1, "neighbour_position": 0},
    ]

    corpus = conform_table(pa.table({"text": ["t"], "doc_id": ["d"]}), schema_for("corpus"), artifact="c")
    assert corpus.to_pylist() == [
        {
            "doc_id": "d",
            "text": "t",
            "text_pair": None,
            "label": None,
            "label_set": None,
            "group": None,
            "gold_spans": None,
            "gold_word_scores": None,
            "gold_unlocated": None,
            "label_name": None,
        }
    ]


def test_conform_casts_list_element_types_and_names() -> None:
    label_sets = pa.array([[1, 2], None], pa.list_(pa.int64()))
    table = pa.table({"doc_id": ["a", "b"], "text": ["x", "y"], "label_set": label_sets})
    result = conform_table(table, schema_for("corpus"), artifact="c")
    assert result.schema.equals(EXPECTED["corpus"], check_metadata=True)
    assert result.column("label_set").to_pylist() == [[1, 2], None]


def test_conform_casts_variable_lists_to_fixed_size() -> None:
    table = pa.table({"doc_id": ["a"], "embedding": pa.array([[1.0, 2.0]], pa.list_(pa.float64()))})
    result = conform_table(table, schema_for("embeddings", dim=2), artifact="e")
    assert result.schema.field("embedding").type == pa.list_(pa.float32(), 2)
    assert result.column("embedding").to_pylist() == [[1.0, 2.0]]


def test_conform_names_missing_and_extra_columns() -> None:
    table = pa.table({"doc_id": ["a"], "rank": [1], "note": ["x"], "other": [1]})
    with pytest.raises(StorageError) as info:
        conform_table(table, schema_for("neighbours"), artifact="n")
    assert info.value.artifact == "n"
    assert info.value.problem == (
        "missing column(s): 'neighbour_id', 'distance', 'position', 'neighbour_position'; "
        "unexpected column(s): 'note', 'other'"
    )


def test_conform_names_uncastable_column() -> None:
    table = pa.table(
        {
            "doc_id": ["a"],
            "rank": ["first"],
            "neighbour_id": ["b"],
            "distance": [0.5],
            "position": [0],
            "neighbour_position": [1],
        }
    )
    with pytest.raises(StorageError) as info:
        conform_table(table, schema_for("neighbours"), artifact="n")
    assert info.value.problem.startswith("column 'rank': cannot cast string to int32 (")


def test_conform_refuses_overflowing_cast() -> None:
    table = pa.table(
        {
            "doc_id": ["a"],
            "rank": [2**40],
            "neighbour_id": ["b"],
            "distance": [0.5],
            "position": [0],
            "neighbour_position": [1],
        }
    )
    with pytest.raises(StorageError, match="column 'rank': cannot cast int64 to int32"):
        conform_table(table, schema_for("neighbours"), artifact="n")


def test_conform_refuses_wrong_embedding_length() -> None:
    table = pa.table({"doc_id": ["a"], "embedding": [[1.0, 2.0, 3.0]]})
    with pytest.raises(StorageError, match="column 'embedding': cannot cast"):
        conform_table(table, schema_for("embeddings", dim=2), artifact="e")


def test_conform_refuses_nulls_in_non_nullable_column() -> None:
    table = pa.table({"doc_id": ["a", None, None], "text": ["x", "y", "z"]})
    with pytest.raises(StorageError) as info:
        conform_table(table, schema_for("corpus"), artifact="c")
    assert info.value.problem == "column 'doc_id': 2 null value(s) in a non-nullable column"


def test_conform_refuses_duplicated_columns_and_non_tables() -> None:
    table = pa.Table.from_arrays([pa.array(["a"]), pa.array(["b"])], names=["doc_id", "doc_id"])
    with pytest.raises(StorageError, match=r"duplicated column\(s\): 'doc_id'"):
        conform_table(table, schema_for("corpus"), artifact="c")
    with pytest.raises(StorageError, match="expected a pyarrow.Table, got dict"):
        conform_table({"doc_id": ["a"]}, schema_for("corpus"), artifact="c")  # type: ignore[arg-type]


def test_check_schema_accepts_current_schema_and_any_embedding_dim() -> None:
    for kind, schema in EXPECTED.items():
        check_schema(schema, kind, artifact=kind)
    check_schema(embeddings_schema(5), "embeddings", artifact="e")
    check_schema(embeddings_schema(384), "embeddings", artifact="e")


def test_check_schema_refuses_metadata_problems() -> None:
    bare = EXPECTED["corpus"].remove_metadata()
    with pytest.raises(StorageError, match="missing 'xattr.kind' metadata"):
        check_schema(bare, "corpus", artifact="c")
    with pytest.raises(StorageError, match="kind mismatch: file holds 'corpus', expected 'evaluation'"):
        check_schema(EXPECTED["corpus"], "evaluation", artifact="c")
    no_version = bare.with_metadata({b"xattr.kind": b"corpus"})
    with pytest.raises(StorageError, match="missing 'xattr.schema_version' metadata"):
        check_schema(no_version, "corpus", artifact="c")
    version_two = bare.with_metadata({b"xattr.kind": b"corpus", b"xattr.schema_version": b"2"})
    with pytest.raises(StorageError) as info:
        check_schema(version_two, "corpus", artifact="c")
    assert info.value.problem == "schema version '2' is not the supported version 1 of kind 'corpus'"


def test_check_schema_reports_drift() -> None:
    schema = pa.schema(
        [
            _req("doc_id", pa.string()),
            _req("rank", pa.int64()),
            pa.field("distance", pa.float32()),
            _req("extra", pa.string()),
        ],
        metadata=_meta("neighbours"),
    )
    with pytest.raises(StorageError) as info:
        check_schema(schema, "neighbours", artifact="n")
    assert info.value.problem == (
        "schema drift: missing column(s): 'neighbour_id', 'position', 'neighbour_position'; "
        "unexpected column(s): 'extra'; "
        "column 'rank': expected int32 not null, found int64 not null; "
        "column 'distance': expected float not null, found float"
    )


def test_check_schema_reports_column_order() -> None:
    fields = list(EXPECTED["neighbours"])
    schema = pa.schema([fields[1], fields[0], *fields[2:]], metadata=_meta("neighbours"))
    with pytest.raises(StorageError) as info:
        check_schema(schema, "neighbours", artifact="n")
    assert info.value.problem == (
        "schema drift: columns out of order: expected 'doc_id', 'rank', 'neighbour_id', 'distance', 'position', "
        "'neighbour_position', found 'rank', 'doc_id', 'neighbour_id', 'distance', 'position', 'neighbour_position'"
    )


@pytest.mark.parametrize(
    "embedding_type",
    [pa.list_(pa.float32()), pa.list_(pa.float64(), 4), pa.float32()],
)
def test_check_schema_refuses_non_float32_fixed_size_embeddings(
    embedding_type: pa.DataType,
) -> None:
    schema = pa.schema(
        [_req("doc_id", pa.string()), _req("embedding", embedding_type)],
        metadata=_meta("embeddings"),
    )
    with pytest.raises(StorageError) as info:
        check_schema(schema, "embeddings", artifact="e")
    assert info.value.problem == (
        f"schema drift: column 'embedding': expected fixed_size_list<float32, dim>, found {embedding_type}"
    )


def test_embedding_matrix_is_the_rows_vectors_across_chunks() -> None:
    from storage import embedding_matrix

    rows = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.5, 9.0]]
    column = pa.chunked_array(
        [pa.array(rows[:1], pa.list_(pa.float32(), 3)), pa.array(rows[1:], pa.list_(pa.float32(), 3))]
    )
    matrix = embedding_matrix(pa.table({"doc_id": ["a", "b", "c"], "embedding": column}))
    assert matrix.dtype == np.float32 and matrix.tolist() == rows

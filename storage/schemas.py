"""Explicit pyarrow schemas, one per artifact kind, and the checks that hold tables to them.

Every schema carries two metadata entries: ``xattr.kind`` (the artifact kind) and
``xattr.schema_version`` (its version as a decimal string). A write casts a table to its kind's
schema (:func:`conform_table`); a read checks a file's schema against it (:func:`check_schema`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Literal, get_args

import numpy as np
import pyarrow as pa

from storage.errors import StorageError

__all__ = [
    "embedding_matrix",
    "KIND_KEY",
    "KINDS",
    "SCHEMA_VERSION",
    "SCHEMA_VERSIONS",
    "USER_METADATA_PREFIX",
    "VERSION_KEY",
    "ArtifactKind",
    "check_schema",
    "conform_table",
    "embeddings_schema",
    "require_kind",
    "schema_for",
]

ArtifactKind = Literal[
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
]
#: Every tabular artifact kind, in the order of :data:`ArtifactKind`.
KINDS: tuple[str, ...] = get_args(ArtifactKind)

#: The current schema version of every kind.
SCHEMA_VERSION = 1
#: The schema version each kind is written with and must be read with.
SCHEMA_VERSIONS: dict[str, int] = {kind: SCHEMA_VERSION for kind in KINDS}

#: Schema metadata key holding the artifact kind.
KIND_KEY = b"xattr.kind"
#: Schema metadata key holding the schema version.
VERSION_KEY = b"xattr.schema_version"
#: Prefix of schema metadata keys holding user metadata.
USER_METADATA_PREFIX = "xattr.meta."


def _list_of(type_: pa.DataType, size: int = -1) -> pa.DataType:
    # Parquet names a list's values "element" and pyarrow reads them back under that name, so
    # the schemas use it too: a table read back then equals its schema, metadata included.
    return pa.list_(pa.field("element", type_), size)


def _required(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=False)


def _optional(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=True)


def _corpus_fields() -> list[pa.Field]:
    return [
        _required("doc_id", pa.string()),
        _required("text", pa.string()),
        _optional("text_pair", pa.string()),
        # A class index or a regression value.
        _optional("label", pa.float64()),
        # Class indices of a multi-label example.
        _optional("label_set", _list_of(pa.int32())),
        _optional("group", pa.string()),
        # Gold rationale: character spans (within their segment: 0 text, 1 pair text) of the
        # evidence, e.g. WebNLG subject and object entities.
        _optional(
            "gold_spans",
            _list_of(pa.struct([("segment", pa.int8()), ("start", pa.int32()), ("end", pa.int32())])),
        ),
        # Gold importance per whitespace word of the text, e.g. SST |centred leaf label|.
        _optional("gold_word_scores", _list_of(pa.float64())),
        # Gold items of the source that could not be located in the text (counted, not fatal).
        _optional("gold_unlocated", pa.int32()),
        # The class name of ``label`` (classification): the model's, else the index.
        _optional("label_name", pa.string()),
    ]


def _embeddings_fields(dim: int) -> list[pa.Field]:
    return [
        _required("doc_id", pa.string()),
        _required("embedding", _list_of(pa.float32(), dim)),
    ]


def _neighbours_fields() -> list[pa.Field]:
    # The corpus positions too: readers take one shard's rows and never map ids.
    return [
        _required("doc_id", pa.string()),
        _required("rank", pa.int32()),
        _required("neighbour_id", pa.string()),
        _required("distance", pa.float32()),
        _required("position", pa.int64()),
        _required("neighbour_position", pa.int64()),
    ]


def _head_statistics_fields() -> list[pa.Field]:
    return [
        _required("layer", pa.int32()),
        _required("head", pa.int32()),
        # "relation" or "position".
        _required("kind", pa.string()),
        # A dependency relation such as "nsubj", or a relative position such as "+1".
        _required("key", pa.string()),
        _required("frequency", pa.float64()),
        _optional("baseline", pa.float64()),
        _required("count", pa.int64()),
    ]


def _token_attributions_fields() -> list[pa.Field]:
    return [
        _required("doc_id", pa.string()),
        _required("method", pa.string()),
        _required("target", pa.int32()),
        _required("token_index", pa.int32()),
        _required("token", pa.string()),
        # -1 for special tokens.
        _required("word_index", pa.int32()),
        _required("char_start", pa.int32()),
        _required("char_end", pa.int32()),
        _required("score", pa.float32()),
    ]


def _evaluation_fields() -> list[pa.Field]:
    return [
        _required("method", pa.string()),
        # Null marks an aggregate row over all documents.
        _optional("doc_id", pa.string()),
        _required("metric", pa.string()),
        # The fraction of tokens removed, for curve metrics.
        _optional("fraction", pa.float64()),
        _required("value", pa.float64()),
        # The token replacement policy, e.g. "mask".
        _required("replacement", pa.string()),
    ]


def _price_drivers_fields() -> list[pa.Field]:
    return [
        # "overall" or "category".
        _required("scope", pa.string()),
        # The category, or "(all)" for overall rows.
        _required("category", pa.string()),
        # A word, "attribute: value", or a phrase.
        _required("driver", pa.string()),
        # "word", "attribute" or "phrase".
        _required("kind", pa.string()),
        _required("texts", pa.int64()),
        _optional("frequency", pa.float64()),
        # Mean change of predicted price (currency) when the driver is present vs masked.
        _optional("mean_effect", pa.float64()),
        _optional("effect_ci_low", pa.float64()),
        _optional("effect_ci_high", pa.float64()),
        _optional("mean_relative_effect", pa.float64()),
        # The same change in model output units (log price for a log-price model).
        _optional("mean_output_effect", pa.float64()),
        _optional("mean_attribution", pa.float64()),
        _optional("attribution_ci_low", pa.float64()),
        _optional("attribution_ci_high", pa.float64()),
        _optional("mean_predicted_price", pa.float64()),
    ]


def _predictions_fields() -> list[pa.Field]:
    return [
        _required("doc_id", pa.string()),
        # The model's outputs (logits, or the regression value), float64 in output order.
        _required("logits", _list_of(pa.float64())),
        # Softmax of the logits (classification), sigmoid per label (multi-label); null otherwise.
        _optional("probabilities", _list_of(pa.float64())),
        # Classification: the argmax class, its name and probability.
        _optional("predicted_id", pa.int32()),
        _optional("predicted_label", pa.string()),
        _optional("predicted_probability", pa.float64()),
        # Classification: the gold class and its name (null without a label column).
        _optional("gold_id", pa.int32()),
        _optional("gold_label", pa.string()),
        # Multi-label: the labels with probability > 0.5 and the gold label set, with names.
        _optional("predicted_ids", _list_of(pa.int32())),
        _optional("predicted_labels", _list_of(pa.string())),
        _optional("gold_ids", _list_of(pa.int32())),
        _optional("gold_labels", _list_of(pa.string())),
        # Regression: the prediction on the label's scale (exp of a log-output model) and the gold value.
        _optional("predicted_value", pa.float64()),
        _optional("gold_value", pa.float64()),
    ]


def _method_verdicts_fields() -> list[pa.Field]:
    return [
        _required("method", pa.string()),
        # The baseline compared against (the ``random`` method's label).
        _required("reference", pa.string()),
        # A headline metric both report, e.g. "aopc"; "higher" or "lower" is better.
        _required("metric", pa.string()),
        _required("better", pa.string()),
        # Mean over the shared texts of method minus reference, and the paired sign-flip p-value.
        _required("difference", pa.float64()),
        _required("p_value", pa.float64()),
        # Whether the difference points the better way with p below ``alpha``.
        _required("better_than_reference", pa.bool_()),
        _required("alpha", pa.float64()),
        # The metric the method's verdict is read from (one per method: aopc when tested).
        _required("primary", pa.bool_()),
    ]


def _class_drivers_fields() -> list[pa.Field]:
    # xattr.reporting.class_drivers.CLASS_DRIVER_COLUMNS documents each column.
    return [
        # The predicted class (one group "all texts", id 0, for a regressor).
        _required("class_id", pa.int64()),
        _required("class", pa.string()),
        _required("driver", pa.string()),
        # "word" or "phrase".
        _required("kind", pa.string()),
        # 1-based rank by mean_attribution within the class.
        _required("rank", pa.int64()),
        _required("texts", pa.int64()),
        _required("class_texts", pa.int64()),
        _optional("frequency", pa.float64()),
        _optional("mean_attribution", pa.float64()),
        _optional("attribution_ci_low", pa.float64()),
        _optional("attribution_ci_high", pa.float64()),
        # Whether the masked effect was measured (the class's top_k drivers).
        _required("masked", pa.bool_()),
        # Mean drop of the class probability (regressor: of the predicted value) when masked.
        _optional("mean_effect", pa.float64()),
        _optional("effect_ci_low", pa.float64()),
        _optional("effect_ci_high", pa.float64()),
        # Mean class probability (regressor: predicted value) of those texts before masking.
        _optional("mean_probability", pa.float64()),
        _required("method", pa.string()),
    ]


def _tokens_fields() -> list[pa.Field]:
    # One row per text as the encode stage tokenised it (xattr.models.encoding.EncodedCorpus):
    # later stages read these instead of tokenising again. Every list holds ``length`` values.
    return [
        _required("doc_id", pa.string()),
        # Word pieces, special tokens included (the attention length).
        _required("length", pa.int32()),
        # Whether the text was cut to the model's maximum length.
        _required("truncated", pa.bool_()),
        _required("input_ids", _list_of(pa.int32())),
        _required("token_type_ids", _list_of(pa.int8())),
        # Characters of each token within its own segment.
        _required("char_start", _list_of(pa.int32())),
        _required("char_end", _list_of(pa.int32())),
        # 0 text, 1 pair text, -1 special token.
        _required("segments", _list_of(pa.int8())),
        # Whitespace word of each token, -1 for special tokens.
        _required("word_index", _list_of(pa.int32())),
        _required("special", _list_of(pa.bool_())),
    ]


_PLAIN_FIELDS: dict[str, Callable[[], list[pa.Field]]] = {
    "corpus": _corpus_fields,
    "neighbours": _neighbours_fields,
    "head_statistics": _head_statistics_fields,
    "token_attributions": _token_attributions_fields,
    "evaluation": _evaluation_fields,
    "price_drivers": _price_drivers_fields,
    "predictions": _predictions_fields,
    "method_verdicts": _method_verdicts_fields,
    "class_drivers": _class_drivers_fields,
    "tokens": _tokens_fields,
}


def _schema(kind: str, fields: list[pa.Field]) -> pa.Schema:
    metadata = {KIND_KEY: kind.encode(), VERSION_KEY: str(SCHEMA_VERSIONS[kind]).encode()}
    return pa.schema(fields, metadata=metadata)


def embeddings_schema(dim: int) -> pa.Schema:
    """The schema of an ``embeddings`` artifact.

    Args:
        dim: The embedding dimension, a positive integer.

    Returns:
        ``doc_id string not null, embedding fixed_size_list<float32, dim> not null`` with the
        kind metadata.

    Raises:
        StorageError: If ``dim`` is not a positive integer.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
        raise StorageError("embeddings", f"dim must be a positive integer, got {dim!r}")
    return _schema("embeddings", _embeddings_fields(dim))


def embedding_matrix(table: pa.Table) -> np.ndarray:
    """The ``(rows, dim)`` float32 vectors of an ``embeddings`` table (its ``embedding`` column, row by row)."""
    flat = table.column("embedding").combine_chunks().flatten()
    return np.asarray(flat, dtype=np.float32).reshape(table.num_rows, -1)


def schema_for(kind: str, **params: object) -> pa.Schema:
    """The explicit schema of an artifact kind.

    Args:
        kind: One of :data:`KINDS`.
        **params: Schema parameters: ``dim`` for ``embeddings``; no other kind takes any.

    Returns:
        The kind's schema, with ``xattr.kind`` and ``xattr.schema_version`` metadata.

    Raises:
        StorageError: If the kind is unknown, ``embeddings`` lacks ``dim``, or a parameter is
            not one the kind takes.
    """
    if kind == "embeddings":
        unexpected = sorted(set(params) - {"dim"})
        if unexpected:
            raise StorageError(kind, f"unexpected schema parameter(s): {', '.join(unexpected)}")
        if "dim" not in params:
            raise StorageError(kind, "the embeddings schema requires the parameter dim")
        return embeddings_schema(params["dim"])  # type: ignore[arg-type]
    if kind not in _PLAIN_FIELDS:
        raise StorageError(kind, f"unknown artifact kind; valid kinds: {', '.join(KINDS)}")
    if params:
        raise StorageError(kind, f"unexpected schema parameter(s): {', '.join(sorted(params))}")
    return _schema(kind, _PLAIN_FIELDS[kind]())


def require_kind(kind: str, *, artifact: str) -> None:
    """Check that a kind is one of :data:`KINDS`.

    Args:
        kind: The kind to check.
        artifact: The artifact's name or path, for error messages.

    Raises:
        StorageError: Listing the valid kinds, if ``kind`` is not one.
    """
    if kind not in KINDS:
        raise StorageError(artifact, f"unknown artifact kind {kind!r}; valid kinds: {', '.join(KINDS)}")


def _describe(field: pa.Field) -> str:
    return f"{field.type}{'' if field.nullable else ' not null'}"


def _columns(names: list[str]) -> str:
    return ", ".join(repr(name) for name in names)


def conform_table(table: pa.Table, schema: pa.Schema, *, artifact: str) -> pa.Table:
    """Cast a table to a schema, column by column.

    Columns are reordered to the schema's order; a missing nullable column is filled with
    nulls. Casts are pyarrow's safe casts (``int64`` to ``int32`` succeeds while every value
    fits; a list of the right length becomes a fixed-size list).

    Args:
        table: The table to conform.
        schema: The target schema; its metadata becomes the result's metadata.
        artifact: The artifact's name, for error messages.

    Returns:
        A table whose schema equals ``schema``, metadata included.

    Raises:
        StorageError: Naming every offending column, if a column is duplicated, a non-nullable
            column is missing, a column is not in the schema, a cast fails, or a non-nullable
            column holds nulls.
    """
    if not isinstance(table, pa.Table):
        raise StorageError(artifact, f"expected a pyarrow.Table, got {type(table).__name__}")
    duplicated = sorted(name for name, count in Counter(table.column_names).items() if count > 1)
    if duplicated:
        raise StorageError(artifact, f"duplicated column(s): {_columns(duplicated)}")
    problems: list[str] = []
    missing = [f.name for f in schema if f.name not in table.column_names and not f.nullable]
    if missing:
        problems.append(f"missing column(s): {_columns(missing)}")
    extra = [name for name in table.column_names if schema.get_field_index(name) < 0]
    if extra:
        problems.append(f"unexpected column(s): {_columns(extra)}")
    columns: list[pa.ChunkedArray] = []
    for field in schema:
        if field.name not in table.column_names:
            columns.append(pa.chunked_array([pa.nulls(table.num_rows, field.type)]))
            continue
        column = table.column(field.name)
        if column.type != field.type:
            try:
                column = column.cast(field.type)
            except pa.ArrowException as exc:
                problems.append(f"column {field.name!r}: cannot cast {column.type} to {field.type} ({exc})")
                continue
        if not field.nullable and column.null_count:
            problems.append(f"column {field.name!r}: {column.null_count} null value(s) in a non-nullable column")
        columns.append(column)
    if problems:
        raise StorageError(artifact, "; ".join(problems))
    return pa.Table.from_arrays(columns, schema=schema)


def _expected_schema(schema: pa.Schema, kind: str, artifact: str) -> pa.Schema:
    if kind != "embeddings":
        return schema_for(kind)
    index = schema.get_field_index("embedding")
    if index < 0:
        raise StorageError(artifact, "schema drift: missing column(s): 'embedding'")
    type_ = schema.field(index).type
    if not (pa.types.is_fixed_size_list(type_) and type_.value_type == pa.float32()):
        raise StorageError(
            artifact,
            f"schema drift: column 'embedding': expected fixed_size_list<float32, dim>, found {type_}",
        )
    return embeddings_schema(type_.list_size)


def check_schema(schema: pa.Schema, kind: str, *, artifact: str) -> None:
    """Check that a stored schema is exactly the current schema of a kind.

    Args:
        schema: The schema read from a file, with its metadata.
        kind: The kind the artifact is expected to be, one of :data:`KINDS`.
        artifact: The artifact's name or path, for error messages.

    Raises:
        StorageError: If the kind metadata is missing or names another kind, the schema version
            is missing or not the current one, or the columns (names, order, types,
            nullability) differ from the kind's schema. For ``embeddings`` any dimension is
            accepted, but the column must be ``fixed_size_list<float32, dim>``.
    """
    require_kind(kind, artifact=artifact)
    metadata = schema.metadata or {}
    stored_kind = metadata.get(KIND_KEY)
    if stored_kind is None:
        raise StorageError(artifact, "missing 'xattr.kind' metadata; not an xattr artifact")
    if stored_kind.decode(errors="replace") != kind:
        raise StorageError(
            artifact,
            f"kind mismatch: file holds {stored_kind.decode(errors='replace')!r}, expected {kind!r}",
        )
    stored_version = metadata.get(VERSION_KEY)
    if stored_version is None:
        raise StorageError(artifact, "missing 'xattr.schema_version' metadata")
    expected_version = SCHEMA_VERSIONS[kind]
    if stored_version != str(expected_version).encode():
        raise StorageError(
            artifact,
            f"schema version {stored_version.decode(errors='replace')!r} is not the supported "
            f"version {expected_version} of kind {kind!r}",
        )
    expected = _expected_schema(schema, kind, artifact)
    problems: list[str] = []
    duplicated = sorted(name for name, count in Counter(schema.names).items() if count > 1)
    if duplicated:
        problems.append(f"duplicated column(s): {_columns(duplicated)}")
    missing = [name for name in expected.names if name not in schema.names]
    if missing:
        problems.append(f"missing column(s): {_columns(missing)}")
    extra = [name for name in schema.names if expected.get_field_index(name) < 0]
    if extra:
        problems.append(f"unexpected column(s): {_columns(extra)}")
    for field in expected:
        index = schema.get_field_index(field.name)
        if index >= 0 and not schema.field(index).equals(field):
            problems.append(
                f"column {field.name!r}: expected {_describe(field)}, found {_describe(schema.field(index))}"
            )
    if not problems and schema.names != expected.names:
        problems.append(f"columns out of order: expected {_columns(expected.names)}, found {_columns(schema.names)}")
    if problems:
        raise StorageError(artifact, "schema drift: " + "; ".join(problems))

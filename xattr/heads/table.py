"""Head statistics and masks as rows of the ``head_statistics`` table, and masks read back from it.

Columns: ``layer, head, kind, key, frequency, baseline, count``. Row kinds:

- ``relation``: one per (layer, head, relation): ``frequency`` = alpha_k (Eq. 7; NaN when the
  relation had no arc), ``baseline`` = lambda_k, ``count`` = the relation's arcs;
- ``position``: one per (layer, head, offset such as ``"+1"``): ``frequency`` = Eq. 8's frequency,
  ``count`` = query pieces;
- ``offset``: the corpus's dependent-to-head offset distribution (Fig. 1), ``layer = head = -1``,
  key ``"<relation>:<offset>"``, ``frequency`` = share of the relation's arcs, ``count`` = arcs;
- ``mask``: one per (layer, head, ``"syntactic"`` or ``"positional"``): ``frequency`` 1.0 when the
  head is kept, else 0.0; ``baseline`` = the threshold used (xi_synt or xi_pos).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from xattr.heads.masks import HeadMasks
from xattr.heads.statistics import HeadStatistics


def _offset_key(offset: int) -> str:
    return f"{offset:+d}"


def statistics_table(stats: HeadStatistics, xi_synt: float, xi_pos: float) -> pa.Table:
    """Every statistic and both masks (at ``xi_synt``, ``xi_pos``) as one table (see the module doc)."""
    layers, heads = stats.shape
    alpha, baseline, position = stats.alpha(), stats.baseline(), stats.position_frequency()
    masks = stats.masks(xi_synt, xi_pos)
    cols: dict[str, list] = {c: [] for c in ("layer", "head", "kind", "key", "frequency", "baseline", "count")}

    def row(layer: int, head: int, kind: str, key: str, frequency: float, base: float | None, count: int) -> None:
        for name, value in zip(cols, (layer, head, kind, key, float(frequency), base, int(count)), strict=True):
            cols[name].append(value)

    for layer in range(layers):
        for head in range(heads):
            for k, relation in enumerate(stats.relations):
                arcs = stats.relation_arcs[k]
                row(layer, head, "relation", relation, alpha[layer, head, k], float(baseline[k]), arcs)
            for j, offset in enumerate(stats.offsets):
                row(layer, head, "position", _offset_key(offset), position[layer, head, j], None, stats.queries)
            row(layer, head, "mask", "syntactic", masks.syntactic[layer, head], xi_synt, int(stats.relation_arcs.sum()))
            row(layer, head, "mask", "positional", masks.positional[layer, head], xi_pos, stats.queries)
    for k, relation in enumerate(stats.relations):
        arcs = int(stats.relation_arcs[k])
        for offset, hits in sorted(stats.relation_offsets[k].items()):
            row(-1, -1, "offset", f"{relation}:{_offset_key(offset)}", hits / arcs if arcs else np.nan, None, hits)
    return pa.table(
        {
            "layer": pa.array(cols["layer"], pa.int32()),
            "head": pa.array(cols["head"], pa.int32()),
            "kind": pa.array(cols["kind"], pa.string()),
            "key": pa.array(cols["key"], pa.string()),
            "frequency": pa.array(cols["frequency"], pa.float64()),
            "baseline": pa.array(cols["baseline"], pa.float64()),
            "count": pa.array(cols["count"], pa.int64()),
        }
    )


def masks_from_table(
    table: pa.Table, *, xi_synt: float | None = None, xi_pos: float | None = None, source: str = ""
) -> HeadMasks:
    """Head masks from a ``head_statistics`` table.

    Args:
        table: Rows written by :func:`statistics_table`.
        xi_synt: Recompute the syntactic mask from the ``relation`` rows at this threshold; ``None``
            takes the stored ``mask`` rows.
        xi_pos: The same for the positional mask from the ``position`` rows.
        source: Provenance recorded in the masks (model and corpus).

    Returns:
        The masks, shaped ``(layers, heads)`` as in the table.

    Raises:
        ValueError: The table has no per-head rows, or lacks the rows a mask is read from.
    """
    frame = table.to_pandas()
    per_head = frame[frame["layer"] >= 0]
    if per_head.empty:
        raise ValueError("the head_statistics table has no per-head rows")
    shape = (int(per_head["layer"].max()) + 1, int(per_head["head"].max()) + 1)

    def from_rows(kind: str, key: str | None, value: np.ndarray) -> np.ndarray:
        rows = per_head[per_head["kind"] == kind]
        if key is not None:
            rows = rows[rows["key"] == key]
        if rows.empty:
            raise ValueError(f"the head_statistics table has no {kind!r} rows{f' for {key!r}' if key else ''}")
        out = np.zeros(shape, dtype=bool)
        kept = rows[value[rows.index.to_numpy()]]
        out[kept["layer"].to_numpy(), kept["head"].to_numpy()] = True
        return out

    frequency = frame["frequency"].to_numpy(dtype=float)
    baseline = frame["baseline"].to_numpy(dtype=float, na_value=np.nan)

    def per_head_max(kind: str, value: np.ndarray) -> np.ndarray | None:
        rows = per_head[per_head["kind"] == kind]
        if rows.empty:
            return None
        out = np.full(shape, -np.inf)
        np.maximum.at(out, (rows["layer"].to_numpy(), rows["head"].to_numpy()), value[rows.index.to_numpy()])
        return out

    margin = per_head_max("relation", np.nan_to_num(frequency - baseline, nan=-np.inf))
    share = per_head_max("position", frequency)
    if xi_synt is None:
        syntactic = from_rows("mask", "syntactic", frequency > 0.5)
    else:
        syntactic = from_rows("relation", None, np.nan_to_num(frequency - baseline, nan=-np.inf) > xi_synt)
    if xi_pos is None:
        positional = from_rows("mask", "positional", frequency > 0.5)
    else:
        positional = from_rows("position", None, frequency > xi_pos)
    return HeadMasks(syntactic, positional, source, margin, share)

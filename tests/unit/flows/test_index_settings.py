"""Index settings in the config: approximate types and their validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.settings import SettingsError, load_settings
from xattr.neighbours.index import IndexParams


def _config(tmp_path: Path, index: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"corpus: {{path: c.csv}}\nmodel: {{path: some/model}}\nindex: {index}\n")
    return path


def test_index_settings_become_library_params(tmp_path: Path) -> None:
    settings = load_settings(_config(tmp_path, "{type: ivf_pq, nlist: 64, nprobe: 8, pq_m: 48, pq_bits: 6}"))
    assert settings.index.type == "ivf_pq"
    assert settings.index.params() == IndexParams(nlist=64, nprobe=8, pq_m=48, pq_bits=6)


@pytest.mark.parametrize(
    ("index", "message"),
    [
        ("{type: annoy}", r"index.type: Input should be 'flat_l2', 'ivf_flat', 'hnsw' or 'ivf_pq'"),
        ("{type: ivf_flat, nlist: 8, nprobe: 16}", r"index.nprobe=16 exceeds index.nlist=8"),
        ("{type: ivf_pq, pq_bits: 17}", r"index.pq_bits: Input should be less than or equal to 16"),
        ("{type: hnsw, ef_search: 0}", r"index.ef_search: Input should be greater than or equal to 1"),
    ],
)
def test_bad_index_settings_name_the_field(tmp_path: Path, index: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(_config(tmp_path, index))


def test_empty_index_type_is_exact_up_to_the_size_setting_then_hnsw(tmp_path: Path) -> None:
    auto = load_settings(_config(tmp_path, "{exact_up_to: 1000}")).index
    assert auto.type is None
    assert (auto.type_for(1000), auto.type_for(1001)) == ("flat_l2", "hnsw")
    assert load_settings(_config(tmp_path, "{type: ivf_flat}")).index.type_for(10) == "ivf_flat"
    assert load_settings(_config(tmp_path, "{}")).index.type_for(50_000) == "flat_l2"

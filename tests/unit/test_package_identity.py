"""The imported ``xattr`` is this repository's, and the layers depend on each other one way."""

from __future__ import annotations

import ast
import importlib.metadata
from pathlib import Path

import xattr

REPO = Path(__file__).resolve().parents[2]


def test_imported_xattr_is_this_repository() -> None:
    assert Path(xattr.__file__).resolve() == REPO / "xattr" / "__init__.py"
    assert xattr.__distribution__ == "xattr-explain"
    # The PyPI project called "xattr" (extended file attributes) exposes getxattr/setxattr.
    assert not hasattr(xattr, "getxattr")
    dist = importlib.metadata.distribution("xattr-explain")
    assert dist.version == xattr.__version__
    assert "xattr" not in {d.metadata["Name"].lower() for d in importlib.metadata.distributions() if d.metadata["Name"]}


def _imports(package: Path) -> set[str]:
    found: set[str] = set()
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def test_library_imports_neither_prefect_nor_mlflow_nor_upper_layers() -> None:
    imported = _imports(REPO / "xattr")
    assert imported.isdisjoint({"prefect", "mlflow", "storage", "tasks", "flows"}), imported
    assert "torch" in imported  # the scan sees real imports


def test_storage_and_tasks_respect_the_layering() -> None:
    assert _imports(REPO / "storage").isdisjoint({"prefect", "mlflow", "xattr", "tasks", "flows"})
    assert "flows" not in _imports(REPO / "tasks")

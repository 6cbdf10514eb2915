"""The imported ``xattr`` is this repository's, and the layers depend on each other one way."""

from __future__ import annotations

import ast
import importlib.metadata
from pathlib import Path

import pytest

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


# --- the order of the layers inside xattr --------------------------------------------------------
#
# Lower layers never import higher ones. ``types`` and ``device`` import nothing of xattr;
# ``models`` loads models and runs batched passes; the middle layer holds what methods build on
# (data adapters, neighbour search, attention-head statistics and masks, the LRP engine, LDAV
# vectors, training), whose packages may import each other only without a cycle (today ``lrp``
# reads ``heads``' masks, ``training`` reads ``data`` and ``ldav``); ``methods`` compute token
# attributions; ``metrics`` score attributions (``TokenAttribution`` lives in ``types``, so they do
# not need ``methods``); ``reporting`` assembles metric results; ``explainer`` (the Python API) uses them all.
LAYERS: dict[str, int] = {
    "types": 0,
    "device": 0,
    "models": 1,
    "data": 2,
    "neighbours": 2,
    "heads": 2,
    "lrp": 2,
    "ldav": 2,
    "training": 2,
    "methods": 3,
    "metrics": 4,
    "reporting": 5,
    "explainer": 6,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _xattr_imports(package: Path) -> dict[str, set[str]]:
    """Per ``xattr`` module, the ``xattr`` modules it imports anywhere (lazy imports included)."""
    found: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        module = _module_name(path)
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names if alias.name.startswith("xattr."))
            elif isinstance(node, ast.ImportFrom) and node.level > 0:
                raise AssertionError(f"{module}: relative import; xattr imports by absolute name")
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("xattr."):
                targets.add(node.module)
        found[module] = targets - {module}
    return found


def _package(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or ``[]`` when it has none."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def layering_violations(imports: dict[str, set[str]]) -> list[str]:
    """Imports that break the layer order, packages without a layer, and cycles between packages or modules."""
    problems: list[str] = []
    packages: dict[str, set[str]] = {}
    for module, targets in sorted(imports.items()):
        source = _package(module)
        if source and source not in LAYERS:
            problems.append(f"{module}: package {source!r} has no layer in LAYERS")
            continue
        for target in sorted(targets):
            dest = _package(target)
            if dest not in LAYERS:
                problems.append(f"{module} imports {target}: package {dest!r} has no layer in LAYERS")
            elif source and LAYERS[dest] > LAYERS[source]:
                problems.append(f"{module} (layer {LAYERS[source]}) imports {target} (layer {LAYERS[dest]})")
            if source and dest and dest != source:
                packages.setdefault(source, set()).add(dest)
    if cycle := _cycle(packages):
        problems.append("packages import each other in a cycle: " + " -> ".join(cycle))
    if cycle := _cycle(imports):
        problems.append("modules import each other in a cycle: " + " -> ".join(cycle))
    return problems


def test_xattr_layers_import_downwards_only_and_without_cycles() -> None:
    imports = _xattr_imports(REPO / "xattr")
    assert {_package(m) for m in imports} - {""} == set(LAYERS)  # every package has a layer, none is stale
    assert "xattr.lrp.engine" in imports and "xattr.models.forward" in imports["xattr.lrp.engine"]  # lazy ones too
    assert layering_violations(imports) == []


def test_layering_check_reports_upward_imports_and_cycles() -> None:
    upward = {"xattr.models.x": {"xattr.methods.y"}, "xattr.methods.y": set()}
    assert layering_violations(upward) == ["xattr.models.x (layer 1) imports xattr.methods.y (layer 3)"]
    same_layer = {"xattr.lrp.a": {"xattr.heads.b"}, "xattr.heads.b": {"xattr.lrp.c"}, "xattr.lrp.c": set()}
    assert layering_violations(same_layer) == ["packages import each other in a cycle: heads -> lrp -> heads"]
    modules = {"xattr.methods.a": {"xattr.methods.b"}, "xattr.methods.b": {"xattr.methods.a"}}
    assert layering_violations(modules) == [
        "modules import each other in a cycle: xattr.methods.a -> xattr.methods.b -> xattr.methods.a"
    ]
    assert layering_violations({"xattr.extra.a": set()}) == ["xattr.extra.a: package 'extra' has no layer in LAYERS"]


# --- no module reaches for another module's private names ----------------------------------------

FIRST_PARTY = ("xattr", "storage", "tasks", "flows")


def _areas() -> list[str]:
    xattr_packages = sorted(f"xattr/{p.name}" for p in (REPO / "xattr").iterdir() if (p / "__init__.py").is_file())
    return ["xattr/*.py", *xattr_packages, "storage", "tasks", "flows", "bench"]


def _private_imports(area: str) -> list[str]:
    """``module: from a.b import _x`` for every first-party private name imported in ``area``.

    Also a private module imported from outside its package (``storage._files`` serves ``storage``).
    """
    paths = sorted((REPO / "xattr").glob("*.py")) if area == "xattr/*.py" else sorted((REPO / area).rglob("*.py"))
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            if node.module.split(".")[0] not in FIRST_PARTY:
                continue
            importer = _module_name(path)
            private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
            if private:
                found.append(f"{importer}: from {node.module} import {', '.join(private)}")
            parts = node.module.split(".")
            for i, part in enumerate(parts):
                # A private module (storage._files) serves its own package only.
                if part.startswith("_") and not importer.startswith(".".join(parts[:i]) + "."):
                    found.append(f"{importer}: from {node.module} import ... (a private module of another package)")
    return found


@pytest.mark.parametrize("area", _areas())
def test_no_module_imports_another_modules_private_names(area: str) -> None:
    assert _private_imports(area) == []

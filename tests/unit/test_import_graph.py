"""The package's static import graph: acyclic, and the core never imports a modality or launcher.

Every module of ``mim/``, ``modalities/`` (installed as ``mim.modalities``) and ``launchers/``
(``mim.launchers``) is parsed with ``ast``, nothing imported, so this is fast and sees imports
inside functions too (a deferred import still couples two modules). ``python
tests/unit/test_import_graph.py`` prints the strongly connected components of more than one module.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"mim": ROOT / "mim", "mim.modalities": ROOT / "modalities",
            "mim.launchers": ROOT / "launchers"}


def _modules(packages: dict[str, Path]) -> dict[str, Path]:
    found = {}
    for package, folder in packages.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` (a module or a module.attribute) lies in."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(packages: dict[str, Path] = PACKAGES) -> dict[str, set[str]]:
    """module -> the package modules it imports (``from p import m`` counts m if a module)."""
    modules = _modules(packages)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        edges = graph.setdefault(module, set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: strip level-1 parts from the package
                    anchor = module.split(".") if is_package else module.split(".")[:-1]
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                # ``from p import m`` is an edge to the module p.m where m is one, else to p
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            else:
                continue
            for target in targets:
                hit = _resolve(target, modules)
                if hit is not None and hit != module:
                    edges.add(hit)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    found.append(sorted(component))
    return found


def test_the_import_graph_is_acyclic():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_registry_is_a_leaf():
    # every module registers into mim.registry, so it may import nothing of mim
    assert import_graph()["mim.registry"] == set()


def test_the_core_imports_no_modality_and_no_launcher():
    bad = sorted(f"{module} imports {target}"
                 for module, edges in import_graph().items()
                 if not module.startswith(("mim.modalities", "mim.launchers"))
                 for target in edges if target.startswith(("mim.modalities", "mim.launchers")))
    assert not bad, "\n".join(bad)


def test_the_walker_sees_function_level_relative_and_mapped_imports(tmp_path):
    (tmp_path / "core" / "sub").mkdir(parents=True)
    (tmp_path / "plug").mkdir()
    files = {"core/__init__.py": "",
             "core/a.py": "def f():\n    from core import b\n",  # inside a function
             "core/b.py": "from .sub import c\nimport os\n",  # relative, and not ours
             "core/sub/__init__.py": "",
             "core/sub/c.py": "from ..a import f\nfrom core.plug.p import X\n",
             "plug/p.py": "import core.sub.c\n"}  # plug/ installs as core.plug
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    graph = import_graph({"core": tmp_path / "core", "core.plug": tmp_path / "plug"})
    assert graph["core.a"] == {"core.b"} and graph["core.b"] == {"core.sub.c"}
    assert graph["core.sub.c"] == {"core.a", "core.plug.p"}
    assert cycles(graph) == [["core.a", "core.b", "core.plug.p", "core.sub.c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


if __name__ == "__main__":
    for component in cycles(import_graph()):
        print(len(component), " ".join(component))

"""The package's import structure: no cycles between modules or between rooms, and imports point down the
layer order written in the README (DESIGN §2). Imports are read from the source (module level, inside
functions and under TYPE_CHECKING alike), so an import moved into a function to dodge a cycle still counts.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "snps3_ds"

# Top-level rooms of snps3_ds, highest first: a module may import from its own room or any room below it.
LAYERS = [
    ("run",),  # the run flows behind launch/ and their command lines
    ("reports",),  # curves and result tables from run folders
    ("perf",),  # FLOPs/MFU, benchmarks
    ("engine",),  # trainer, engines, checkpoints, train state
    ("evaluation",),  # retrieval / QA / multi-choice protocols
    ("tasks",),  # model + objectives -> losses
    ("objectives",),  # pre-training losses
    ("models",),  # single-device model code
    ("demo",),  # the synthetic demo corpus and its tasks (offline)
    ("mining",),  # significant-word mining (offline)
    ("sharding",),  # shard writing, transcoding, building, verifying (offline)
    ("datasets",),  # one module per public dataset format
    ("downstream",),  # the task annotation format
    ("data",),  # the training / evaluation input path
    ("config", "distributed", "processes", "logging", "local_files", "ranking", "__init__"),  # the ground
]
RANK = {room: level for level, rooms in enumerate(LAYERS) for room in rooms}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((REPO / PACKAGE).rglob("*.py"))}


def imports_of(path: Path, name: str, known: set[str]) -> list[tuple[str, int]]:
    """(imported snps3_ds module, line) for every import statement in the file, wherever it stands."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        for target in targets:
            while target and target not in known and "." in target:
                target = target.rsplit(".", 1)[0]  # `import a.b.c` of a name inside a.b
            if target in known and target != name:
                found.append((target, node.lineno))
    return found


def import_graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], str]]:
    """module -> imported modules, and where each edge is written (file:line)."""
    modules = package_modules()
    known = set(modules)
    graph: dict[str, set[str]] = defaultdict(set)
    where: dict[tuple[str, str], str] = {}
    for name, path in modules.items():
        graph[name]
        for target, line in imports_of(path, name, known):
            if name.startswith(target + "."):
                continue  # a module importing its own package's __init__ (for a re-export) is not a cycle
            graph[name].add(target)
            where.setdefault((name, target), f"{path.relative_to(REPO)}:{line}")
    return graph, where


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan), each sorted; [] when acyclic."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def room_of(module: str, depth: int) -> str:
    """The room a module lives in, `depth` names below snps3_ds (a module directly there is its own room)."""
    parts = module.split(".")
    return ".".join(parts[:depth + 1]) if len(parts) > depth else module


def room_graph(graph: dict[str, set[str]], depth: int, inside: str | None = None) -> dict[str, set[str]]:
    """Edges between rooms at `depth`, for the modules under `inside` (all of snps3_ds when None)."""
    rooms: dict[str, set[str]] = defaultdict(set)
    for source, targets in graph.items():
        for target in targets:
            if inside and not (source.startswith(inside + ".") and target.startswith(inside + ".")):
                continue
            a, b = room_of(source, depth), room_of(target, depth)
            if a != b:
                rooms[a].add(b)
    return rooms


def shortest_cycle(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One shortest loop through the component's first node (breadth first), as a list of nodes."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for target in sorted(graph.get(node, ())):
                if target == start:
                    return paths[node] + [start]
                if target in members and target not in paths:
                    paths[target] = paths[node] + [target]
                    nxt.append(target)
        frontier = nxt
    return component


def describe(component: list[str], graph: dict[str, set[str]], where: dict[tuple[str, str], str]) -> str:
    loop = shortest_cycle(component, graph)
    return " -> ".join(loop) + "  [" + "; ".join(where.get((a, b), f"{a} -> {b}") for a, b in zip(loop, loop[1:])) + "]"


def test_layering_no_import_cycle_between_modules() -> None:
    graph, where = import_graph()
    found = cycles(graph)
    assert not found, "import cycles between modules:\n" + "\n".join(describe(c, graph, where) for c in found)


def test_layering_no_import_cycle_between_rooms() -> None:
    graph, where = import_graph()
    problems = []
    subpackages = sorted({m.rsplit(".", 1)[0] for m, p in package_modules().items() if p.name == "__init__.py"})
    for inside in [None, *subpackages]:
        depth = 1 if inside is None else inside.count(".") + 1
        rooms = room_graph(graph, depth, inside)
        for component in cycles(rooms):
            problems.append(f"{inside or PACKAGE}: rooms {component} import each other: "
                            + describe(component, rooms, {}))
    assert not problems, "\n".join(problems)


def test_layering_imports_point_down_the_layer_order() -> None:
    graph, where = import_graph()
    rooms = {m.split(".")[1] if "." in m else "__init__" for m in graph}
    unplaced = sorted(rooms - set(RANK))
    assert not unplaced, f"rooms missing from LAYERS (place them in the order): {unplaced}"
    upward = []
    for source, targets in sorted(graph.items()):
        for target in sorted(targets):
            a, b = source.split(".")[1] if "." in source else "__init__", target.split(".")[1] if "." in target \
                else "__init__"
            if RANK[b] < RANK[a]:
                upward.append(f"{source} -> {target} ({where[(source, target)]}): {a} is below {b}")
    assert not upward, "imports pointing up the layer order:\n" + "\n".join(upward)


def test_layering_entry_points_are_thin_and_import_only_the_package() -> None:
    """launch/ and data_prep/ parse arguments and call the library; nothing imports them back."""
    for folder in ("launch", "data_prep"):
        for path in sorted((REPO / folder).glob("*.py")):
            lines = len(path.read_text().splitlines())
            assert lines < 120, f"{path.relative_to(REPO)} has {lines} lines; move the logic into {PACKAGE}"
            tree = ast.parse(path.read_text())
            local = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and (n.level or (n.module or "")
                     .split(".")[0] in ("launch", "data_prep", "tests"))]
            assert not local, f"{path.relative_to(REPO)} imports a script folder: it should import {PACKAGE}"
    for path in (REPO / PACKAGE).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] in ("launch", "data_prep", "tests") for n in names), \
                f"{path.relative_to(REPO)}:{node.lineno} imports an entry-point folder"


def test_layering_no_import_path_manipulation() -> None:
    offenders = [str(p.relative_to(REPO)) for folder in (PACKAGE, "launch", "data_prep", "tests")
                 for p in (REPO / folder).rglob("*.py") if "sys" + ".path" in p.read_text()]
    assert not offenders, f"import-path manipulation (the package is installed; import it): {offenders}"


@pytest.mark.parametrize("edges, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
])
def test_layering_cycle_finder_sees_cycles(edges: dict[str, set[str]], expected: list[list[str]]) -> None:
    """The checker itself: a cycle added to a graph is found (so the tests above can fail)."""
    assert cycles(edges) == expected


def test_layering_rooms_of_a_function_level_import_count(tmp_path: Path) -> None:
    """An import inside a function is read like one at module level."""
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from snps3_ds.data import loader\n    return loader\n")
    assert imports_of(source, "snps3_ds.x", {"snps3_ds.data", "snps3_ds.data.loader"}) == [("snps3_ds.data.loader", 2)]

"""The layering rule of docs/ARCHITECTURE.md ("Layers"), checked on the source: every module of avface/,
occlusion_synth/ and pipelines/ is parsed with ``ast`` and every import, at any depth (inside functions too, so a
function-local import cannot hide a cycle), is an edge of the module graph. The test fails on

- an import from a lower layer to a higher one (e.g. avface.models importing avface.train),
- an import of ``avface.train`` by inference, evaluation or the demo (they read trained models through
  ``avface.trained``, the layer below them),
- any cycle between modules,
- a package that the layer table does not place (add it to ``LAYERS`` and to docs/ARCHITECTURE.md),

naming each offending import as ``file:line``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP_PACKAGES = ("avface", "occlusion_synth", "pipelines")

#: Layers, bottom (0) to top; a module may import its own layer and the ones below, never one above.
LAYERS: dict[str, int] = {
    # 0: tensors, files and meshes; no knowledge of the model, the data set or the pipelines
    "avface": 0,  # the package's own __init__
    "avface.face_model": 0,
    "avface.render": 0,
    "avface.losses": 0,
    "avface.audio": 0,
    "avface.speech": 0,
    "avface.io": 0,
    "avface.utils": 0,
    "avface.metrics": 0,
    # 1: landmark detection, networks, drawing
    "avface.landmarks": 1,
    "avface.models": 1,
    "avface.viz": 1,
    "avface.fitting": 1,  # the face model fitted to 2D landmarks (reconstruction's test-time fit, pseudo-GT)
    # 2: corpora and shards
    "avface.data": 2,
    "avface.synth": 2,
    "occlusion_synth": 2,
    # 3: the trained model as a contract: checkpoint format and the input contract (written by train, read by
    # inference and evaluate)
    "avface.trained": 3,
    # 4: what uses models on data
    "avface.train": 4,
    "avface.inference": 4,
    "avface.evaluate": 4,
    "avface.demo": 4,  # the main job on the embedded default
    "avface.ablation": 4,  # the ablation grid: trains (avface.train) and evaluates (avface.evaluate) each row
    # 5: entry points
    "avface.cli": 5,
    "avface.configs": 5,  # registers every area's config with Hydra, for the pipelines
    "pipelines": 5,
}
LAYER_NAMES = ("bottom", "landmarks/models/viz", "data/synth/occlusion_synth", "trained",
               "train/inference/evaluate", "pipelines")
#: packages that use a trained model and must not depend on how it was trained
TRAINING_FREE = ("avface.inference", "avface.evaluate", "avface.demo")


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported in-repo module (a submodule when the name imported is one, else the package)
    where: str  # file:line

    def __str__(self) -> str:
        return f"{self.where}: {self.source} imports {self.target}"


def discover_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under the top packages (a package is its ``__init__``)."""
    modules: dict[str, Path] = {}
    for top in TOP_PACKAGES:
        for path in sorted((root / top).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _in_repo(name: str) -> bool:
    return name.split(".")[0] in TOP_PACKAGES


def module_imports(module: str, path: Path, modules: dict[str, Path], root: Path = ROOT) -> list[Import]:
    """In-repo imports of one module, anywhere in its body (functions, classes, ``if`` blocks)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    rel = path.relative_to(root)
    out: list[Import] = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            # ``from pkg import sub`` imports the submodule; ``from pkg import name`` runs the package
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for target in dict.fromkeys(targets):
            if _in_repo(target) and target != module:
                out.append(Import(module, target, f"{rel}:{node.lineno}"))
    return out


def layer_of(module: str) -> int | None:
    """Layer of the longest ``LAYERS`` prefix of ``module``; None when no entry covers it."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return LAYERS[key]
    return None


def import_graph(root: Path = ROOT) -> tuple[dict[str, Path], list[Import]]:
    modules = discover_modules(root)
    edges = [imp for m, p in modules.items() for imp in module_imports(m, p, modules, root)]
    return modules, edges


def cycles(modules: list[str], edges: list[Import]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    graph: dict[str, list[str]] = {m: [] for m in modules}
    for e in edges:
        if e.target in graph:
            graph[e.source].append(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in modules:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(graph[w])))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on_stack.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


@pytest.fixture(scope="module")
def graph() -> tuple[dict[str, Path], list[Import]]:
    return import_graph()


def test_the_graph_sees_every_kind_of_import(graph):
    """The parser is not blind: ``from`` and relative imports of the real tree become edges (function-local ones:
    see the small tree below)."""
    modules, edges = graph
    assert len(modules) > 50
    pairs = {(e.source, e.target) for e in edges}
    assert ("avface.face_model.loading", "avface.face_model.flame_loader") in pairs  # from x.y import name
    assert ("occlusion_synth", "occlusion_synth.sequence") in pairs  # from .sequence import ...
    assert ("pipelines.synthesize", "avface.synth.corpus") in pairs


def test_every_package_has_a_layer(graph):
    modules, _ = graph
    unplaced = sorted(m for m in modules if layer_of(m) is None)
    assert not unplaced, (f"modules outside the layer table {unplaced}: add their package to LAYERS in "
                          f"{Path(__file__).name} and to the Layers section of docs/ARCHITECTURE.md")


def test_no_import_goes_up_a_layer(graph):
    _, edges = graph
    upward = []
    for e in edges:
        src, dst = layer_of(e.source), layer_of(e.target)
        if src is not None and dst is not None and dst > src:
            upward.append(f"{e} (layer {src} {LAYER_NAMES[src]} -> layer {dst} {LAYER_NAMES[dst]})")
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def training_imports(edges: list[Import]) -> list[Import]:
    """Imports of ``avface.train`` (any module of it) by a module of :data:`TRAINING_FREE`."""
    return [e for e in edges if any(_within(e.source, p) for p in TRAINING_FREE) and _within(e.target, "avface.train")]


def test_inference_and_evaluation_do_not_import_training(graph):
    """Inference, evaluation and the demo use trained models (``avface.trained``), never the training package."""
    _, edges = graph
    found = training_imports(edges)
    assert not found, ("imports of avface.train by inference / evaluate / demo (use avface.trained, "
                       "avface.data.shard_index or avface.metrics):\n" + "\n".join(map(str, found)))


def test_no_import_cycles(graph):
    modules, edges = graph
    found = cycles(list(modules), edges)
    lines = []
    for comp in found:
        members = set(comp)
        lines.append("cycle between " + ", ".join(comp) + ":")
        lines += [f"  {e}" for e in edges if e.source in members and e.target in members]
    assert not found, "\n".join(lines)


def test_the_checks_catch_an_upward_import_and_a_hidden_cycle(tmp_path):
    """On a small tree: a function-local import that closes a cycle and a models -> train import are both found,
    with file:line."""
    pkg = tmp_path / "avface"
    for sub in ("models", "train"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "a.py").write_text("from avface.models import b\n")
    hidden = "def f():\n    from avface.models.a import x\n    from avface.train import loop\n"
    (pkg / "models" / "b.py").write_text(hidden)
    (pkg / "train" / "loop.py").write_text("")
    modules, edges = import_graph(tmp_path)
    assert cycles(list(modules), edges) == [["avface.models.a", "avface.models.b"]]
    up = [str(e) for e in edges if layer_of(e.target) > layer_of(e.source)]
    assert up == ["avface/models/b.py:3: avface.models.b imports avface.train.loop"]


def test_the_check_catches_inference_importing_training(tmp_path):
    """On a small tree: inference importing training (same layer, so the layer check lets it pass) is found, with
    file:line, also inside a function; ``avface.trained`` is not ``avface.train``."""
    pkg = tmp_path / "avface"
    for sub in ("inference", "evaluate", "train", "trained"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "train" / "data.py").write_text("")
    (pkg / "trained" / "checkpoints.py").write_text("")
    (pkg / "inference" / "a.py").write_text("from avface.trained.checkpoints import x\n\n\ndef f():\n"
                                            "    from avface.train.data import y\n")
    (pkg / "evaluate" / "b.py").write_text("import avface.train\n")
    _, edges = import_graph(tmp_path)
    assert sorted(map(str, training_imports(edges))) == [
        "avface/evaluate/b.py:1: avface.evaluate.b imports avface.train",
        "avface/inference/a.py:5: avface.inference.a imports avface.train.data"]

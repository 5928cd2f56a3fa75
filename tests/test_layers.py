"""Imports run one way: each module imports only from its own layer's package or a layer below.

The allowed direction, lowest first (data, written once here). A module may import any module
of a lower layer and modules of its own package; nothing else of mlx_hjepa.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mlx_hjepa"

LAYERS = [
    {"_blas", "_jit", "_malloc", "_ops", "rules", "errors", "devices"},  # the floor (rules, errors: pure Python)
    {"_streams"},                          # the step's CPU streams (sets the BLAS's threads)
    {"masks"},                             # numpy mask rules
    {"config"},                            # schema; validates with the owners' rules
    {"data"},                              # host-side pixels
    {"models"},
    {"objective", "distributed"},
    {"weights"},                           # weight files
    {"rundir"},                            # the run directory's layout, lock, checkpoints
    {"eval"},                              # reads runs through rundir and weights
    {"viz"},                               # pictures of a model (report, and images during training)
    {"train"},                             # may use eval for the in-run k-NN
    {"export", "report", "info"},          # command-line tools on top; never imported below
]
LAYER_OF = {name: i for i, layer in enumerate(LAYERS) for name in layer}
PURE = {"rules", "errors", "config", "masks"}  # must not import MLX (config validates before any MLX work)


def top_level(path):
    rel = path.relative_to(PACKAGE).with_suffix("")
    return rel.parts[0] if rel.parts[0] != "__init__" else None


def imported_modules(path):
    """mlx_hjepa top-level names (and external roots) that `path` imports, at any depth."""
    tree = ast.parse(path.read_text())
    package_parts = path.relative_to(PACKAGE).parent.parts
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((node.lineno, alias.name.split(".")))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package_parts[: len(package_parts) - (node.level - 1)])
                parts = base + (node.module.split(".") if node.module else [])
                if not parts:  # "from . import x" at the package root
                    parts = [alias.name for alias in node.names][:1]
                elif not node.module:
                    parts = parts + [node.names[0].name]
                found.append((node.lineno, ["mlx_hjepa", *parts]))
            else:
                found.append((node.lineno, node.module.split(".")))
    return found


def violations():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = top_level(path)
        if own is None:
            continue
        assert own in LAYER_OF, f"{own} is in no layer: add it to LAYERS in {__file__}"
        for line, parts in imported_modules(path):
            if own in PURE and parts[0] == "mlx":
                problems.append(f"{path.relative_to(PACKAGE)}:{line} imports MLX but {own} must stay pure")
            if parts[0] != "mlx_hjepa" or len(parts) < 2:
                continue
            target = parts[1]
            if target in ("__version__",) or target == own:
                continue
            if target not in LAYER_OF:
                problems.append(f"{path.relative_to(PACKAGE)}:{line} imports mlx_hjepa.{target}, which is in no layer")
            elif LAYER_OF[target] >= LAYER_OF[own]:
                problems.append(f"{path.relative_to(PACKAGE)}:{line} imports {target} (layer {LAYER_OF[target]}) "
                                f"from {own} (layer {LAYER_OF[own]}): imports must go down")
    return problems


def test_imports_only_go_down():
    assert violations() == []


def test_checker_catches_an_upward_import(tmp_path, monkeypatch):
    """The checker itself can fail: a models module that imports train is reported."""
    fake = tmp_path / "mlx_hjepa"
    (fake / "models").mkdir(parents=True)
    (fake / "models" / "bad.py").write_text("from ..train import trainer\nimport mlx_hjepa.eval\n")
    (fake / "rules.py").write_text("import mlx.core as mx\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    found = violations()
    assert any("models/bad.py:1 imports train" in p for p in found)
    assert any("models/bad.py:2 imports eval" in p for p in found)
    assert any("rules.py:1 imports MLX" in p for p in found)


def test_no_function_level_imports_of_the_package():
    """Lazy imports of our own modules only ever hid cycles; the package __init__'s lazy
    load_encoder (kept so `import mlx_hjepa` binds the BLAS before mlx.core) is the one exception."""
    lazy = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and (inner.level or (inner.module or "").startswith("mlx_hjepa")):
                        lazy.append(f"{path.relative_to(PACKAGE)}:{inner.lineno}")
    assert lazy == []

"""The package layout: stages import one way, and planning stays free of heavy dependencies."""

import ast
import subprocess
import sys
from pathlib import Path

from package_imports import package_imports

import hilo_export

PACKAGE = Path(hilo_export.__file__).parent
# A module may import its own stage and the stages before it; model and folder, evaluation and serving are peers.
STAGE = {"errors": -1, "files": 0, "examples": 0, "images": 0, "planning": 1, "model": 2, "folder": 2, "export": 3,
         "runtime": 4, "reference": 5, "training": 6, "evaluation": 7, "serving": 7, "cli_bench": 8, "cli_distill": 8, "cli": 9}
# Earlier stages that a stage still must not import: serving engines never loads the exporter or the trainer.
FORBIDDEN = {("runtime", "export"), ("serving", "export"), ("serving", "training")}


def _stage_of(parts: tuple[str, ...]) -> str | None:
    return parts[0] if parts and parts[0] in STAGE else None


def _imported_modules(path: Path, package: Path) -> list[tuple[int, tuple[str, ...]]]:
    """Every hilo_export module ``path`` imports (function-level imports included), as parts below the package."""
    return [(line, m) for line, target, names, from_package in package_imports(path, package)
            for m in ([(*target, n) for n in names] if from_package else [target])]


def wrong_way_imports(package: Path) -> list[str]:
    """Every import in ``package`` that reaches a later stage (or a peer that is not its own stage)."""
    wrong = []
    for path in package.rglob("*.py"):
        own = _stage_of(path.relative_to(package).with_suffix("").parts)  # None: the root __init__
        for line, target in _imported_modules(path, package):
            other = _stage_of(target)
            if own is not None and other is not None and other != own and (
                    STAGE[other] >= STAGE[own] or (own, other) in FORBIDDEN):
                wrong.append(f"{path.relative_to(package)}:{line} imports {'.'.join(target)}")
    return wrong


def test_every_stage_imports_only_earlier_stages():
    assert len(list(PACKAGE.rglob("*.py"))) > 30
    wrong = wrong_way_imports(PACKAGE)
    assert not wrong, "imports against the stage order:\n" + "\n".join(wrong)


def test_a_wrong_way_import_is_seen(tmp_path):
    # the check must be able to fail: planning importing export, relatively and absolutely, even inside a function
    (tmp_path / "planning").mkdir()
    (tmp_path / "planning" / "a.py").write_text("from ..export import builder\n")
    (tmp_path / "planning" / "b.py").write_text("def f():\n    import hilo_export.runtime.runtime\n")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "d.py").write_text("from hilo_export import runtime\nfrom hilo_export.planning import plan\n")
    (tmp_path / "runtime").mkdir()
    (tmp_path / "runtime" / "c.py").write_text("from ..planning import plan\nfrom . import pipeline\nfrom ..export import graph\n")
    assert sorted(wrong_way_imports(tmp_path)) == [
        "model/d.py:1 imports runtime", "planning/a.py:1 imports export", "planning/b.py:2 imports runtime.runtime",
        "runtime/c.py:3 imports export"]


def test_planning_loads_no_heavy_dependency():
    code = ("import sys, hilo_export.planning; "
            "print(sorted(m for m in ('diffusers', 'onnx', 'onnxruntime', 'tensorrt', 'polygraphy', 'transformers') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_serving_engines_loads_no_exporter():
    # runtime and serving read engine folders; the exporter, its graph libraries and the evaluation stack stay out
    heavy = ("hilo_export.export", "onnxscript", "onnx_ir", "polygraphy", "matplotlib", "skimage", "tensorrt")
    code = ("import sys, hilo_export.runtime, hilo_export.serving; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r} or m.startswith({heavy[0]!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_package_error_derives_from_hilo_error():
    from hilo_export.errors import HiLoError

    classes = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and (node.name.endswith("Error") or node.name.endswith("Exception")):
                classes.append((path, node))
    assert len(classes) > 10
    for path, node in classes:
        bases = [b.id if isinstance(b, ast.Name) else ast.unparse(b) for b in node.bases]
        assert node.name == "HiLoError" or "HiLoError" in bases, f"{path.relative_to(PACKAGE)}: {node.name}{tuple(bases)}"
    assert issubclass(__import__("hilo_export.folder", fromlist=["ManifestError"]).ManifestError, HiLoError)


def test_public_api_is_at_the_package_root():
    from hilo_export import (  # noqa: F401
        HiLoRuntime,
        HiLoTransformer,
        PlannerConfig,
        TokenPlan,
        apply,
        plan_batch,
        plan_tokens,
    )

    assert callable(apply) and HiLoRuntime.__module__ == "hilo_export.runtime.runtime"

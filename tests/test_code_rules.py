"""Rules a newcomer can rely on: modules under 400 lines, no private names imported across modules,
no import circles inside a stage, every error the package raises is a HiLoError, one table of
precisions and backends."""

import ast
import json
from pathlib import Path

from package_imports import package_imports

import hilo_export
from hilo_export.folder.backends import BACKENDS
from hilo_export.folder.dtypes import PRECISIONS

PACKAGE = Path(hilo_export.__file__).parent


def _module_name(path: Path, package: Path) -> tuple[str, ...]:
    parts = path.relative_to(package).with_suffix("").parts
    return parts[:-1] if parts[-1] == "__init__" else parts


def private_imports(package: Path) -> list[str]:
    found = []
    for path in package.rglob("*.py"):
        where = str(path.relative_to(package))
        for line, target, names, _ in package_imports(path, package):
            found += [f"{where}:{line} imports {'.'.join(target)}.{n}" for n in names
                      if n.startswith("_") and not n.startswith("__")]
    return found


def stage_cycles(package: Path) -> list[list[str]]:
    """Import circles between modules of the package (any stage), as lists of module names."""
    modules = {_module_name(p, package): p for p in package.rglob("*.py")}
    edges: dict[tuple, set] = {m: set() for m in modules}
    for module, path in modules.items():
        for _, target, names, _ in package_imports(path, package):
            # `from . import x` names a module x when one exists, else the package itself
            targets = [(*target, n) for n in names if (*target, n) in modules] or [target]
            edges[module] |= {t for t in targets if t in modules and t != module and not _is_parent(t, module)}
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append([".".join(m) for m in stack[stack.index(nxt):]])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for module in sorted(modules):
        if module not in state:
            visit(module, [])
    return cycles


def _is_parent(package_parts: tuple, module: tuple) -> bool:
    # importing one's own package (its __init__) re-exports; the package importing the module is not a circle
    return module[: len(package_parts)] == package_parts


def test_no_private_name_is_imported_across_modules():
    found = private_imports(PACKAGE)
    assert not found, "private names imported across modules:\n" + "\n".join(found)


def test_the_private_import_check_can_fail(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "a.py").write_text("def f():\n    from .b import _hidden\n")
    (tmp_path / "model" / "b.py").write_text("_hidden = 1\n")
    assert private_imports(tmp_path) == ["model/a.py:2 imports model.b._hidden"]


def test_no_import_circles():
    cycles = stage_cycles(PACKAGE)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_circle_check_can_fail(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "__init__.py").write_text("from .a import f\n")
    (tmp_path / "model" / "a.py").write_text("from .b import g\n")
    (tmp_path / "model" / "b.py").write_text("def g():\n    from .a import f\n")
    assert stage_cycles(tmp_path) == [["model.a", "model.b"]]


def test_the_package_raises_only_its_own_errors():
    plain = []
    for path in PACKAGE.rglob("*.py"):
        where = str(path.relative_to(PACKAGE))
        if where == "serving/router.py":  # the router runs inside Triton, numpy only
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and isinstance(node.exc.func, ast.Name) \
                    and node.exc.func.id in ("ValueError", "RuntimeError", "TypeError"):
                plain.append(f"{where}:{node.lineno} raises {node.exc.func.id}")
    assert not plain, "raise the stage's HiLoError subclass instead:\n" + "\n".join(plain)


def test_one_table_of_precisions_and_backends():
    from click import Choice

    from hilo_export.cli import build, triton

    schema = json.loads((PACKAGE / "folder" / "manifest.schema.json").read_text())["properties"]
    assert schema["precision"]["enum"] == list(PRECISIONS)
    assert schema["backend"]["properties"]["name"]["enum"] == list(BACKENDS)
    options = {p.name: p.type for p in build.params}
    assert isinstance(options["precision"], Choice) and list(options["precision"].choices) == list(PRECISIONS)
    assert list(options["backend"].choices) == list(BACKENDS)
    assert list({p.name: p.type for p in triton.params}["backend"].choices) == list(BACKENDS)


def test_every_module_is_under_400_lines():
    # past that a module mixes jobs: split it by role
    sizes = {p.relative_to(PACKAGE): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    long = [f"{path}: {n}" for path, n in sizes.items() if n >= 400]
    assert not long, "modules of 400 lines or more:\n" + "\n".join(long)

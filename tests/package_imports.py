"""One reader of the package's own imports, for the layout and code-rule tests."""

import ast
from pathlib import Path


def package_imports(path: Path, package: Path):
    """(line, target, names, from_package) of every hilo_export import in ``path``, function-level ones too.

    ``target`` is the imported module as parts below the package; ``from_package`` is true when the
    names may themselves be modules (``from . import x``, ``from hilo_export import x``)."""
    current = path.relative_to(package).with_suffix("").parts[:-1]  # where a relative import starts
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = current[: len(current) - (node.level - 1)]
                target = (*base, *node.module.split(".")) if node.module else base
            elif (node.module or "").split(".")[0] == "hilo_export":
                target = tuple(node.module.split(".")[1:])
            else:
                continue
            yield node.lineno, target, [a.name for a in node.names], node.module is None or not target
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("hilo_export."):
                    yield node.lineno, tuple(a.name.split(".")[1:]), [], False

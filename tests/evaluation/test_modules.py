"""The evaluation stage's modules: small, no import circles (lazy imports included), no private names across modules."""

import re
from pathlib import Path

import hilo_export.evaluation

FOLDER = Path(hilo_export.evaluation.__file__).parent


def _imports() -> dict[str, set[str]]:
    return {f.stem: set(re.findall(r"^\s*from \.(\w+) import", f.read_text(), re.M)) for f in FOLDER.glob("*.py")}


def _cycle(graph: dict[str, set[str]], start: str) -> list[str] | None:
    stack = [(start, [start])]
    while stack:
        node, path = stack.pop()
        for nxt in graph.get(node, ()):
            if nxt == start:
                return path + [nxt]
            if nxt not in path:
                stack.append((nxt, path + [nxt]))
    return None


def test_no_import_circles_inside_evaluation():
    graph = {k: v for k, v in _imports().items() if k != "__init__"}
    assert "settings" in graph["bench"] and "bench" not in graph["report"]  # the old bench <-> report circle
    cycles = [c for c in (_cycle(graph, name) for name in graph) if c]
    assert not cycles, cycles


def test_a_circle_is_seen():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}, "a") == ["a", "b", "c", "a"]


def test_modules_are_small_and_import_no_private_names():
    for path in FOLDER.glob("*.py"):
        text = path.read_text()
        assert len(text.splitlines()) < 400, path.name
        for names in re.findall(r"^\s*from \.+[\w.]* import \(?([^)\n]*)", text, re.M):
            private = [n for n in re.split(r"[,\s]+", names) if n.startswith("_")]
            assert not private, (path.name, private)

"""The layout's rules, checked on the source (docs/architecture.md):

- no import cycle among the modules of ``components/`` and ``study/``, imports inside functions included;
- ``components/`` never imports Ray or MLflow;
- every ``study/`` module says what it offers in ``__all__``, and another module imports only that
  from it (never a private helper of another command); nobody imports an underscored name of
  another module.
"""

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGES = ("components", "study")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(), filename=str(path)) for name, path in MODULES.items()}


def imports(name: str) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) of every import in module ``name``, nested ones included."""
    found = []
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if submodule in MODULES:  # ``from study import console``: the module itself
                    found.append((submodule, [], node.lineno))
                else:
                    found.append((node.module, [alias.name], node.lineno))
    return found


def internal_edges() -> dict[str, set[str]]:
    return {
        name: {target for target, _, _ in imports(name) if target in MODULES and target != name} for name in MODULES
    }


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the directed graph, as a list of nodes, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = "open", stack.append(node)
        for target in sorted(edges[node]):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node], _ = "done", stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def declared_all(name: str) -> list[str] | None:
    for node in TREES[name].body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_there_are_modules_to_check():
    assert {"study.cli", "study.training.driver", "components.registration"} <= set(MODULES)


def test_no_import_cycle():
    cycle = find_cycle(internal_edges())
    assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize("name", [name for name in MODULES if name.startswith("components")])
def test_components_never_import_ray_or_mlflow(name):
    outside = [(module, line) for module, _, line in imports(name) if module.split(".")[0] in ("ray", "mlflow")]
    assert not outside, f"{MODULES[name]}: {outside}"


@pytest.mark.parametrize("name", [n for n in MODULES if n.startswith("study.") and MODULES[n].name != "__init__.py"])
def test_every_study_module_declares_what_it_offers(name):
    if name == "study.__main__":
        return
    offered = declared_all(name)
    assert offered is not None, f"{MODULES[name]}: no __all__"
    body = TREES[name].body
    tree_names = {n.name for n in body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    tree_names |= {t.id for n in body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    tree_names |= {n.target.id for n in body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    tree_names |= {a.asname or a.name for n in body if isinstance(n, ast.Import | ast.ImportFrom) for a in n.names}
    assert set(offered) <= tree_names, f"{MODULES[name]}: __all__ names {sorted(set(offered) - tree_names)} it lacks"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_import_only_what_others_offer(name):
    for module, names, line in imports(name):
        if module not in MODULES:
            continue
        where = f"{MODULES[name]}:{line} imports from {module}"
        private = [n for n in names if n.startswith("_")]
        assert not private, f"{where} the private {private}"
        offered = declared_all(module)
        if module.startswith("study.") and names and offered is not None:
            hidden = [n for n in names if n not in offered]
            assert not hidden, f"{where} {hidden}, which it does not offer (its __all__: {offered})"


@pytest.mark.slow  # a subprocess
def test_training_in_process_never_imports_ray():
    """The modules a ``study train`` in process goes through leave Ray unimported (seconds of start-up)."""
    import subprocess
    import sys

    modules = ["study.cli", "study.training.driver", "study.data.generate", "study.evaluation.measure"]
    code = "import sys, " + ", ".join(modules) + "; print(sorted(m for m in ('ray', 'matplotlib') if m in sys.modules))"
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "[]", completed.stdout

"""The package layout: data flows one way (models ← weights ← envs ← analyses ← report ← api ← cli), every package
declares its public API, and no function grows past what one screen shows."""

import ast
import importlib
import pathlib
import pkgutil

import pytest

import jaxinterp

ROOT = pathlib.Path(jaxinterp.__file__).parent

TIERS = {
    "errors": 0,
    "render": 0,
    "atomic": 0,
    "cache": 0,
    "progress": 0,
    "models": 1,
    "weights": 2,
    "envs": 3,
    "featviz": 4,
    "examples": 4,
    "sae": 4,
    "rl": 4,
    "interventions": 4,
    "report": 5,
    "api": 6,
    "cli": 7,
}
"""A module may import its own package and packages of its tier or lower: the analyses (tier 4) use each other."""

MAX_FUNCTION_LINES = 80


def _modules():
    return sorted(p for p in ROOT.rglob("*.py"))


def _imports(path: pathlib.Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxinterp."):
            yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("jaxinterp."):
                    yield node.lineno, alias.name


def test_every_top_level_name_has_a_tier():
    names = {p.relative_to(ROOT).parts[0].removesuffix(".py") for p in _modules()} - {"__init__"}
    assert names <= set(TIERS), f"give {sorted(names - set(TIERS))} a tier in TIERS"


def test_nothing_imports_upward():
    upward = []
    for path in _modules():
        mine = path.relative_to(ROOT).parts[0].removesuffix(".py")
        if mine == "__init__":
            continue
        for line, module in _imports(path):
            theirs = module.split(".")[1]
            if TIERS[theirs] > TIERS[mine]:
                upward.append(f"{path.relative_to(ROOT.parent)}:{line} imports {module}")
    assert not upward, "imports against the data flow:\n" + "\n".join(upward)


def test_every_package_declares_its_public_api():
    for info in pkgutil.walk_packages(jaxinterp.__path__, "jaxinterp."):
        module = importlib.import_module(info.name)
        assert hasattr(module, "__all__"), f"{info.name} has no __all__"
        missing = [n for n in module.__all__ if not hasattr(module, n)]
        assert not missing, f"{info.name}.__all__ names {missing}, which it does not define"


DISTRIBUTIONS = {
    "PIL": "pillow",
    "orbax": "orbax-checkpoint",
    "procgen": "procgen-mirror",
    "ml_dtypes": "ml-dtypes",
}
"""Import names whose distribution is named otherwise."""


def test_every_imported_package_is_declared():
    import re
    import sys
    import tomllib

    project = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=!~ \[]", d)[0].lower() for d in project["dependencies"]}
    imported = set()
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m != "jaxinterp"}
    missing = sorted(m for m in third_party if DISTRIBUTIONS.get(m, m).lower() not in declared)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_function_is_longer_than_a_screen(path):
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"split {long}"

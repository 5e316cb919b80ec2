"""The package's structure, read from its code: no circle of imports, a core that imports nothing
of Orthanc, the engine in small units, errors that know nothing of HTTP, bounded caches."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from consistent_anon.orthanc import http_answers

from consistent_anon import errors

from consistent_anon.dicom import filereader
from consistent_anon.lru import LruCache

PACKAGE = Path(__file__).parents[1] / "plugin" / "consistent_anon"
#: The subpackages, from the top layer down: a module imports its own subpackage or lower ones,
#: never a higher one (the root modules, "", are the bottom: they import nothing of the package).
LAYERS = ("orthanc", "traceability", "gateway", "jobs", "verification", "pipeline", "pixels", "identity",
          "reidentification", "dicom", "")
#: The only layer that talks to the `orthanc` module (passed in) and answers HTTP.
ADAPTER_SIDE = "orthanc"
#: No function of the plugin is longer than this.
MAX_LINES = 60
#: At most this many modules at the package's root: the rest is in subpackages named for their part.
MAX_ROOT_MODULES = 12


def _name(path: Path) -> str:
    """A module's dotted name inside the package ("pipeline.engine", "errors", "__init__")."""
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def _layer(module: str) -> str:
    return module.split(".")[0] if "." in module else ""


def _tree(module: str) -> ast.Module:
    return ast.parse((PACKAGE / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8"))


def _resolve(module: str, node: ast.ImportFrom) -> list[str]:
    """The package modules a relative import names (a subpackage's module, or a module itself)."""
    base = module.split(".")[:-1]
    if node.level > 1:
        base = base[:len(base) - (node.level - 1)]
    target = base + (node.module.split(".") if node.module else [])
    if node.module:
        return [".".join(target)]
    return [".".join(target + [alias.name]) for alias in node.names]


def _runtime_imports(module: str, typing_too: bool = False) -> set[str]:
    """The package's modules that `module` imports when it runs (at any depth), and with
    `typing_too` those it imports for type hints only."""
    imported: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING" and not typing_too:
            return
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            imported.update(name for name in _resolve(module, node) if name in MODULE_SET)
        if isinstance(node, ast.Import) or isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module] if isinstance(node, ast.ImportFrom) else [alias.name for alias in node.names]
            imported.update("<orthanc>" for name in names if name and name.split(".")[0] == "orthanc")
        for child in ast.iter_child_nodes(node):
            visit(child)
    visit(_tree(module))
    return imported


MODULES = sorted(_name(path) for path in PACKAGE.rglob("*.py") if not path.name == "__init__.py")
MODULE_SET = set(MODULES)
GRAPH = {module: _runtime_imports(module) for module in MODULES}
#: With the imports for type hints: a circle there is two modules that should be one, or a third.
TYPED_GRAPH = {module: _runtime_imports(module, typing_too=True) for module in MODULES}


def test_no_module_imports_orthanc_and_the_core_imports_no_adapter():
    assert not [module for module, imported in GRAPH.items() if "<orthanc>" in imported]
    core = [module for module in MODULES if _layer(module) != ADAPTER_SIDE]
    assert {module: [m for m in GRAPH[module] if _layer(m) == ADAPTER_SIDE] for module in core
            if any(_layer(m) == ADAPTER_SIDE for m in GRAPH[module])} == {}


def test_imports_go_one_way_between_layers():
    """Every module of every subpackage: no import of a higher layer (the engine's alone was held
    to it before; an upward import is how a core ends up knowing of HTTP)."""
    upward = {f"{module} -> {target}" for module in MODULES for target in GRAPH[module]
              if LAYERS.index(_layer(target)) < LAYERS.index(_layer(module))}
    assert upward == set()


def test_the_root_holds_few_modules_and_every_subpackage_says_what_it_is():
    assert len(list(PACKAGE.glob("*.py"))) <= MAX_ROOT_MODULES
    assert {path.parent.name for path in PACKAGE.glob("*/__init__.py")} == set(LAYERS) - {""}
    assert all(ast.get_docstring(ast.parse(path.read_text())) for path in PACKAGE.glob("*/__init__.py"))


def test_no_circle_of_imports_not_even_for_type_hints():
    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for module in TYPED_GRAPH.get(start, ()):
            if module == target or (module not in seen and reaches(module, target, seen | {module})):
                return True
        return False
    assert [module for module in MODULES if reaches(module, module, set())] == []


@pytest.mark.parametrize("module", MODULES)
def test_functions_are_short(module):
    long = [f"{node.name}: {node.end_lineno - node.lineno + 1} lines" for node in ast.walk(_tree(module))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_LINES]
    assert long == []


def test_errors_know_nothing_of_http_and_every_one_has_an_answer():
    """The statuses are decided in http_answers.py only; every error class of the core maps there."""
    classes = [value for value in vars(errors).values()
               if isinstance(value, type) and issubclass(value, errors.PluginError)]
    assert all(not hasattr(cls, "status") for cls in classes)
    special = {errors.StoredButUnfinished: (errors.NotFound("x"),), errors.ResultDisappeared: (),
               errors.PartlyKept: (errors.NotFound("x"), ["s"], 1, True)}
    statuses = {cls.__name__: http_answers.http_status(cls(*special.get(cls, ("x",)))) for cls in classes}
    assert statuses == {"PluginError": 500, "Refused": 400, "BadRequest": 400, "BadFileFormat": 400,
                        "Forbidden": 403, "NotFound": 404, "Conflict": 409, "ResultDisappeared": 409,
                        "SubjectRequired": 403, "VerificationFailed": 500, "StoredButUnfinished": 500,
                        "PartlyKept": 404,
                        "BurnedInPixels": 400}


def test_an_error_orthanc_raised_keeps_its_code_and_status():
    error = http_answers.native_error(13, "Inexistent file")
    assert isinstance(error, errors.NotFound) and http_answers.orthanc_error(error) == (13, "Inexistent file")
    assert http_answers.orthanc_error(errors.Conflict("x")) == (8, "Bad request")
    unfinished = errors.StoredButUnfinished(errors.Conflict("x"))
    assert http_answers.http_status(unfinished) == 409 and http_answers.orthanc_error(unfinished) == (8, "Bad request")


def test_process_wide_caches_are_bounded():
    assert filereader.implicit_vr.cache_info().maxsize == filereader.IMPLICIT_VRS_REMEMBERED
    cache: LruCache[int, int] = LruCache(3)
    for key in range(10):
        cache.put(key, key)
    cache.get(7)
    cache.put(10, 10)
    assert len(cache) == 3 and cache.get(7) == 7 and cache.get(8) is None

"""The package's structure, read from its code: no circle of imports, a core that imports nothing
of Orthanc, the engine in small units, errors that know nothing of HTTP, bounded caches."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from consistent_anon import answers, errors, filereader
from consistent_anon.lru import LruCache

PACKAGE = Path(__file__).parents[1] / "plugin" / "consistent_anon"
#: The modules that talk to the `orthanc` module (passed in) and answer HTTP: the adapter side.
ADAPTER_SIDE = {"__init__", "adapter", "job_routes"}
#: The per-call pipeline: no function longer than this without its docstring saying why.
ENGINE = ("engine", "call_run", "instance_steps", "result_index", "deletions", "origins", "identities",
          "transforms", "verification", "port")
MAX_LINES = 60


def _tree(module: str) -> ast.Module:
    return ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))


def _runtime_imports(module: str) -> set[str]:
    """The package's modules that `module` imports when it runs (at any depth, not for typing only)."""
    imported: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            return
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            imported.update([node.module.split(".")[0]] if node.module else [alias.name for alias in node.names])
        if isinstance(node, ast.Import) or isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module] if isinstance(node, ast.ImportFrom) else [alias.name for alias in node.names]
            imported.update("<orthanc>" for name in names if name and name.split(".")[0] == "orthanc")
        for child in ast.iter_child_nodes(node):
            visit(child)
    visit(_tree(module))
    return imported


MODULES = sorted(path.stem for path in PACKAGE.glob("*.py"))
GRAPH = {module: _runtime_imports(module) for module in MODULES}


def test_no_module_imports_orthanc_and_the_core_imports_no_adapter():
    assert not [module for module, imported in GRAPH.items() if "<orthanc>" in imported]
    core = set(MODULES) - ADAPTER_SIDE
    assert {module: GRAPH[module] & ADAPTER_SIDE for module in core if GRAPH[module] & ADAPTER_SIDE} == {}


def test_no_circle_of_imports():
    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for module in GRAPH.get(start, ()):
            if module == target or (module not in seen and reaches(module, target, seen | {module})):
                return True
        return False
    assert [module for module in MODULES if reaches(module, module, set())] == []


@pytest.mark.parametrize("module", ENGINE)
def test_engine_functions_are_short_or_say_why(module):
    long = [f"{node.name}: {node.end_lineno - node.lineno + 1} lines" for node in ast.walk(_tree(module))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_LINES
            and "long because" not in (ast.get_docstring(node) or "").lower()]
    assert long == []


def test_errors_know_nothing_of_http_and_every_one_has_an_answer():
    """The statuses are decided in answers.py only; every error class of the core maps there."""
    classes = [value for value in vars(errors).values()
               if isinstance(value, type) and issubclass(value, errors.PluginError)]
    assert all(not hasattr(cls, "status") for cls in classes)
    special = {errors.StoredButUnfinished: (errors.NotFound("x"),), errors.ResultDisappeared: (),
               errors.PartlyKept: (errors.NotFound("x"), ["s"], 1, True)}
    statuses = {cls.__name__: answers.http_status(cls(*special.get(cls, ("x",)))) for cls in classes}
    assert statuses == {"PluginError": 500, "Refused": 400, "BadRequest": 400, "BadFileFormat": 400,
                        "Forbidden": 403, "NotFound": 404, "Conflict": 409, "ResultDisappeared": 409,
                        "SubjectRequired": 403, "VerificationFailed": 500, "StoredButUnfinished": 500,
                        "PartlyKept": 404}


def test_an_error_orthanc_raised_keeps_its_code_and_status():
    error = answers.native_error(13, "Inexistent file")
    assert isinstance(error, errors.NotFound) and answers.orthanc_error(error) == (13, "Inexistent file")
    assert answers.orthanc_error(errors.Conflict("x")) == (8, "Bad request")
    unfinished = errors.StoredButUnfinished(errors.Conflict("x"))
    assert answers.http_status(unfinished) == 409 and answers.orthanc_error(unfinished) == (8, "Bad request")


def test_process_wide_caches_are_bounded():
    assert filereader.implicit_vr.cache_info().maxsize == filereader.IMPLICIT_VRS_REMEMBERED
    cache: LruCache[int, int] = LruCache(3)
    for key in range(10):
        cache.put(key, key)
    cache.get(7)
    cache.put(10, 10)
    assert len(cache) == 3 and cache.get(7) == 7 and cache.get(8) is None

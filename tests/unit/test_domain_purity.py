"""The domain imports only the standard library (DESIGN.md, "Layers and what each may import")."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import mcp_oauth_bridge.domain

DOMAIN_DIR = Path(mcp_oauth_bridge.domain.__file__).resolve().parent
DOMAIN_FILES = sorted(DOMAIN_DIR.rglob("*.py"))


def imported_top_level_modules(source: str) -> set[str]:
    """Top-level names of every absolute import, at any depth (including inside functions)."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return modules


def test_domain_files_are_found() -> None:
    names = {path.relative_to(DOMAIN_DIR).as_posix() for path in DOMAIN_FILES}
    assert {"model.py", "ports.py", "errors.py", "security.py", "policy.py", "services/tokens.py"} <= names


@pytest.mark.parametrize("path", DOMAIN_FILES, ids=lambda p: p.relative_to(DOMAIN_DIR).as_posix())
def test_domain_module_imports_only_the_standard_library(path: Path) -> None:
    modules = imported_top_level_modules(path.read_text(encoding="utf-8"))
    foreign = sorted(m for m in modules if m not in sys.stdlib_module_names and m != "__future__")
    assert foreign == [], f"{path.name} imports non-stdlib modules: {foreign}"


def test_the_checker_catches_third_party_and_own_package_imports() -> None:
    source = "import flask\nfrom sqlite3 import connect\nfrom mcp_oauth_bridge.adapters import x\nfrom . import y\n"
    modules = imported_top_level_modules(source)
    assert modules == {"flask", "sqlite3", "mcp_oauth_bridge"}
    assert sorted(m for m in modules if m not in sys.stdlib_module_names) == ["flask", "mcp_oauth_bridge"]

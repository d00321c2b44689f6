"""The layers between the packages hold: `lint-imports` keeps pyproject.toml's contracts."""

from __future__ import annotations

import ast
import configparser
import sys
import tomllib
from pathlib import Path

import pytest
from importlinter.cli import EXIT_STATUS_SUCCESS, lint_imports

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = {contract.get("id"): contract for contract in tomllib.loads(
    (ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]}


def test_lint_imports_keeps_every_contract(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))  # lint_imports puts the folder first
    passed = lint_imports(config_filename=str(ROOT / "pyproject.toml"),
                          no_cache=True) == EXIT_STATUS_SUCCESS
    assert passed, capsys.readouterr().out


def package_folders() -> dict[str, Path]:
    """Each ptychoedge.<package> and its folder, as setup.cfg maps them."""
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    pairs = (line.split("=") for line in setup["options"]["package_dir"].strip().splitlines())
    return {package.strip(): ROOT / folder.strip() for package, folder in pairs}


def modules_importing(packages: set[str]) -> set[str]:
    """The project's modules that import one of `packages`, at module level or in a function."""
    found = set()
    for package, folder in package_folders().items():
        for path in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                if any(name.split(".")[0] in packages for name in names):
                    parts = path.relative_to(folder).with_suffix("").parts
                    found.add(".".join((package, *parts)).removesuffix(".__init__"))
    return found


@pytest.mark.parametrize(("contract", "loaded"), [
    ("pvapy-processes", {"pvaccess", "pvapy"}),
    ("softioc-p4p-processes", {"softioc", "p4p"}),
])
def test_the_process_boundary_covers_every_module_that_loads_its_side(contract, loaded):
    listed, found = set(CONTRACTS[contract]["source_modules"]), modules_importing(loaded)
    assert listed == found, (f"pyproject.toml's contract {contract!r}: add {found - listed}, "
                             f"remove {listed - found}")

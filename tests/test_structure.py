"""The house rules every merge keeps: small files and functions, and the import direction between the packages.

    no file over 300 lines        outside tests/ and the C++ kernel (kangaroo/csrc/)
    no function over 60 lines     anywhere, tests included
    imports point down            common/ <- data/ <- kangaroo/ <- dvi/ <- kangaroo_dvi/ <- evaluation/ <- scripts/:
                                  kangaroo/ imports nothing from dvi/, the library (kangaroo/, dvi/, kangaroo_dvi/)
                                  nothing from its command lines (evaluation/) or scripts/
    flags stay out of the core    no argparse in kangaroo/ or dvi/ (configs carry their flags; common/ and the
                                  command lines parse them)
"""
import ast
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO

MAX_FILE_LINES, MAX_FUNCTION_LINES = 300, 60
# package -> the project packages it must not import (lazily inside a function included)
FORBIDDEN = {"common": {"data", "kangaroo", "dvi", "evaluation", "kangaroo_dvi", "scripts"},
             "data": {"kangaroo", "dvi", "evaluation", "kangaroo_dvi", "scripts"},
             "kangaroo": {"dvi", "evaluation", "kangaroo_dvi", "scripts"},
             "dvi": {"evaluation", "kangaroo_dvi", "scripts"},
             "kangaroo_dvi": {"evaluation", "scripts"},
             "evaluation": {"scripts"}}
NO_ARGPARSE = ("kangaroo", "dvi")


def source_files(suffixes=(".py",)) -> list[Path]:
    """The files git tracks or would track (untracked but not ignored), or every file outside a git checkout."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
        paths = [REPO / p for p in out]
    except (OSError, subprocess.CalledProcessError):
        paths = [p for p in REPO.rglob("*") if p.is_file()]
    return sorted(p for p in paths if p.suffix in suffixes and p.is_file()
                  and p.relative_to(REPO).parts[0] not in ("runs", "assets"))


def rel(p: Path) -> str:
    return p.relative_to(REPO).as_posix()


def test_no_file_over_300_lines_outside_tests_and_the_kernel():
    long = {rel(p): n for p in source_files((".py", ".sh"))
            if not rel(p).startswith(("tests/", "kangaroo/csrc/"))
            and (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES}
    assert not long, f"split these by concern (at most {MAX_FILE_LINES} lines): {long}"


def test_no_function_over_60_lines():
    long = {f"{rel(p)}:{node.name}": node.end_lineno - node.lineno + 1 for p in source_files()
            for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES}
    assert not long, f"split these into named steps (at most {MAX_FUNCTION_LINES} lines): {long}"


def imported_packages(p: Path) -> set[str]:
    """The top-level names ``p`` imports, anywhere in the file."""
    names = set()
    for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_down(package):
    wrong = {rel(p): sorted(imported_packages(p) & FORBIDDEN[package]) for p in source_files()
             if rel(p).startswith(package + "/")}
    wrong = {k: v for k, v in wrong.items() if v}
    assert not wrong, f"{package}/ must not import {sorted(FORBIDDEN[package])}: {wrong}"


@pytest.mark.parametrize("package", NO_ARGPARSE)
def test_no_argparse_in_the_core(package):
    wrong = [rel(p) for p in source_files() if rel(p).startswith(package + "/") and "argparse" in imported_packages(p)]
    assert not wrong, f"{package}/ must not parse flags (a config carries its flag; common/ parses): {wrong}"


def test_the_checks_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from evaluation import cli\n\ndef f():\n" + "    x = 1\n" * 61)
    assert imported_packages(bad) == {"evaluation"}
    fn = ast.parse(bad.read_text()).body[1]
    assert fn.end_lineno - fn.lineno + 1 > MAX_FUNCTION_LINES

"""The package rules of docs/architecture.md, checked on the source itself.

The allowed imports are read from the doc's table, so the doc and the code
cannot drift apart: a new import across packages needs a new table entry.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARCHITECTURE = REPO / "docs" / "architecture.md"
PACKAGE_ROOTS = {"newsbeam": REPO / "newsbeam", "newsbeam_lab": REPO / "lab" / "newsbeam_lab"}
TABLE_ROW = re.compile(r"^\| `(?P<package>[\w.]+)` \| [^|]+ \| (?P<imports>[^|]+) \|$", re.M)


def module_files() -> dict[str, Path]:
    modules = {}
    for top, folder in PACKAGE_ROOTS.items():
        for path in folder.rglob("*.py"):
            parts = (top,) + path.relative_to(folder).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


MODULES = module_files()


def imported_modules(path: Path) -> set[str]:
    """Every newsbeam module ``path`` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in MODULES}


IMPORTS = {name: imported_modules(path) - {name} for name, path in MODULES.items()}


def package_of(module: str, packages: set[str]) -> str:
    """The longest table entry that ``module`` is or lies under."""
    candidates = [p for p in packages if module == p or module.startswith(p + ".")]
    return max(candidates, key=len)


def allowed_imports() -> dict[str, set[str]]:
    table = {}
    for row in TABLE_ROW.finditer(ARCHITECTURE.read_text(encoding="utf-8")):
        cell = row["imports"].strip()
        table[row["package"]] = set() if cell == "—" else set(re.findall(r"`([\w.]+)`", cell))
    return table


def test_the_table_names_every_package():
    table = allowed_imports()
    assert {"newsbeam.transforms", "newsbeam.pipeline", "newsbeam.labelling", "newsbeam_lab"} <= set(table)
    unplaced = [m for m in MODULES if not any(m == p or m.startswith(p + ".") for p in table)]
    assert unplaced == []


def test_every_import_across_packages_is_in_the_table():
    table = allowed_imports()
    runtime = {p for p in table if p.startswith("newsbeam") and not p.startswith("newsbeam_lab")}
    violations = []
    for module, imports in IMPORTS.items():
        own = package_of(module, set(table))
        for target in imports:
            theirs = package_of(target, set(table))
            if theirs == own:
                continue
            allowed = runtime if table[own] == {"any runtime package"} or own == "newsbeam.pipeline" else table[own]
            if theirs not in allowed:
                violations.append(f"{module} imports {target} ({own} may not import {theirs})")
    assert violations == []


def test_pipeline_may_import_every_runtime_package_but_nothing_imports_the_pipeline_or_the_lab():
    upward = [f"{m} -> {t}" for m, ts in IMPORTS.items() for t in ts
              if t.startswith("newsbeam.pipeline") and not m.startswith("newsbeam.pipeline")]
    into_lab = [f"{m} -> {t}" for m, ts in IMPORTS.items() for t in ts
                if t.startswith("newsbeam_lab") and not m.startswith("newsbeam_lab")]
    assert upward == [] and into_lab == []


def test_no_import_circles():
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in IMPORTS[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in IMPORTS:
        if module not in index:
            visit(module)
    assert circles == []


def test_every_transforms_module_defines_a_ptransform_or_a_dofn():
    without = []
    for name, path in MODULES.items():
        if not name.startswith("newsbeam.transforms.") or path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        bases = {ast.unparse(base) for node in tree.body if isinstance(node, ast.ClassDef) for base in node.bases}
        if not bases & {"beam.PTransform", "beam.DoFn"}:
            without.append(name)
    assert without == []


TORCH_PROBE = """
import sys
from newsbeam.pipeline.cli import main
code = main(sys.argv[1:])
print("torch" in sys.modules, code)
"""


@pytest.mark.parametrize("arguments", [
    ["run", "--help"],
    ["run", "--skip_labels", "--inputs", str(REPO / "newsbeam" / "seeds" / "000_adb80237c80a1eea.txt")],
], ids=["run-help", "skip-labels-run"])
def test_commands_that_label_nothing_never_import_torch(arguments, tmp_path):
    if "--skip_labels" in arguments:
        arguments = arguments + ["--output", str(tmp_path / "out")]
    result = subprocess.run([sys.executable, "-c", TORCH_PROBE, *arguments], capture_output=True, text=True,
                            cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "False 0"
    if "--skip_labels" in arguments:
        assert list((tmp_path / "out").glob("*=*/**/*.parquet"))  # the run did write its rows

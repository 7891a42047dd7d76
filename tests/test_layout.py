"""The package layout: the product does not depend on the Anthropic API simulator.

``monitor.simulator`` is a test and demo fixture shipped with the product. Only two places may
import it: the CLI's ``simulate`` command (inside its function body, so other commands never
load it) and ``monitor/demo.py``. Checked twice: statically, over every module's syntax tree,
and at run time, over what importing every product module actually loads.

The tests have a layout too: a test module never imports from another test module. Shared
helpers live in the kits (``tests/factories.py``, ``simkit.py``, ``reportkit.py``, ...), so a
test module can be read, run and changed on its own.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import monitor

SIMULATOR = "monitor.simulator"
PACKAGE = Path(monitor.__file__).parent
ROOT = PACKAGE.parent
# Files allowed to import the simulator anywhere, and files allowed to inside one function.
ALLOWED_FILES = {"monitor/demo.py"}
ALLOWED_FUNCTIONS = {"monitor/cli/simulate.py": "simulate"}
# Not product code (the simulator itself), or not importable on its own (alembic's env.py).
SKIPPED_DIRS = ("monitor/simulator/",)
# Importing these runs something: the CLI entry point and the demo.
NOT_IMPORTED = {"monitor.__main__", "monitor.demo"}
TESTS = ROOT / "tests"
TEST_MODULE = "tests.test_"


def _product_files() -> list[str]:
    """Return every product module's path relative to the project root (posix)."""
    paths = (path.relative_to(ROOT).as_posix() for path in PACKAGE.rglob("*.py"))
    return sorted(rel for rel in paths if not rel.startswith(SKIPPED_DIRS))


def _module_name(rel: str) -> str:
    parts = rel.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_simulator(name: str) -> bool:
    return name == SIMULATOR or name.startswith(SIMULATOR + ".")


def _imported_names(node: ast.AST, rel: str) -> list[str]:
    """Return every module name an import statement (or a literal import call) may load."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            # Relative: resolve against the package the file belongs to.
            package = _module_name(rel)
            if not rel.endswith("/__init__.py"):
                package = package.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        # `from monitor import simulator` loads the submodule monitor.simulator.
        return [base, *(f"{base}.{alias.name}" for alias in node.names)]
    if isinstance(node, ast.Call) and node.args:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        first = node.args[0]
        if name in ("import_module", "__import__") and isinstance(first, ast.Constant):
            return [str(first.value)]
    return []


def _allowed_lines(tree: ast.Module, rel: str) -> list[range]:
    """Return the line spans of ``rel`` in which importing the simulator is allowed."""
    if rel in ALLOWED_FILES:
        return [range(1, (tree.body[-1].end_lineno or 1) + 1)] if tree.body else []
    function = ALLOWED_FUNCTIONS.get(rel)
    return [
        range(node.body[0].lineno, (node.end_lineno or node.lineno) + 1)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == function
    ]


def scan(rel: str, source: str) -> tuple[list[str], list[str]]:
    """Return ``(violations, allowed)``: the simulator imports of one file, as ``file:line``."""
    tree = ast.parse(source, filename=rel)
    spans = _allowed_lines(tree, rel)
    violations: list[str] = []
    allowed: list[str] = []
    for node in ast.walk(tree):
        if not any(_is_simulator(name) for name in _imported_names(node, rel)):
            continue
        line = getattr(node, "lineno", 0)
        where = f"{rel}:{line}: {ast.get_source_segment(source, node)}"
        (allowed if any(line in span for span in spans) else violations).append(where)
    return violations, allowed


def test_only_simulate_and_the_demo_import_the_simulator() -> None:
    files = _product_files()
    assert set(files) >= {
        "monitor/cli/simulate.py",
        "monitor/demo.py",
        "monitor/collect.py",
        "monitor/sources/batches.py",
        "monitor/notifiers/slack.py",
    }
    violations: list[str] = []
    allowed: list[str] = []
    for rel in files:
        bad, good = scan(rel, (ROOT / rel).read_text(encoding="utf-8"))
        violations += bad
        allowed += good
    assert not violations, (
        "only the CLI's `simulate` command and monitor/demo.py may import monitor.simulator:\n"
        + "\n".join(violations)
    )
    # The scan does see the allowed imports (so it would see others).
    assert any(a.startswith("monitor/cli/simulate.py:") for a in allowed), allowed
    assert any(a.startswith("monitor/demo.py:") for a in allowed), allowed


def test_the_scan_catches_every_form_of_import() -> None:
    planted = {
        "monitor/collect.py": "import monitor.simulator\n",
        "monitor/rules.py": "from monitor.simulator.server import SimulatorServer\n",
        "monitor/alerts.py": "from monitor import db, simulator\n",
        "monitor/sources/usage.py": "from ..simulator import build_scenario\n",
        "monitor/sources/__init__.py": "from .. import simulator\n",
        "monitor/summary.py": "def f():\n    importlib.import_module('monitor.simulator.faults')\n",
        "monitor/cli/simulate.py": "from monitor.simulator import SCENARIOS\ndef simulate(): ...\n",
        "monitor/cli/collect.py": "def simulate():\n    from monitor.simulator import SCENARIOS\n",
    }
    found = sorted(v.split(": ")[0] for rel, text in planted.items() for v in scan(rel, text)[0])
    assert found == [
        "monitor/alerts.py:1",
        "monitor/cli/collect.py:2",
        "monitor/cli/simulate.py:1",
        "monitor/collect.py:1",
        "monitor/rules.py:1",
        "monitor/sources/__init__.py:1",
        "monitor/sources/usage.py:1",
        "monitor/summary.py:2",
    ]
    fine = {
        "monitor/advisor.py": "import monitor.simulators_elsewhere\nfrom monitor import db\n",
        "monitor/cli/simulate.py": "def simulate():\n    from monitor.simulator import SCENARIOS\n",
        "monitor/demo.py": "from monitor.simulator import SimulatorServer\n",
    }
    for rel, text in fine.items():
        assert scan(rel, text)[0] == [], rel


def test_importing_the_product_loads_no_simulator_module() -> None:
    modules = sorted(
        name for name in map(_module_name, _product_files()) if name not in NOT_IMPORTED
    )
    for required in (
        "monitor.cli",
        "monitor.collect",
        "monitor.rules",
        "monitor.alerts",
        "monitor.summary",
        "monitor.advisor",
        "monitor.sources.batches",
        "monitor.sources.usage",
        "monitor.sources.call_logs",
        "monitor.notifiers.slack",
        "monitor.notifiers.log",
    ):
        assert required in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"loaded = sorted(m for m in sys.modules if m.startswith({SIMULATOR!r}))\n"
        "assert not loaded, f'importing the product loaded {loaded}'\n"
        "print('ok', len(sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok ")


def scan_test_imports(rel: str, source: str) -> list[str]:
    """Return the imports of another ``tests.test_*`` module in one test file, as ``file:line``."""
    tree = ast.parse(source, filename=rel)
    own = _module_name(rel)
    found: list[str] = []
    for node in ast.walk(tree):
        names = _imported_names(node, rel)
        if any(n.startswith(TEST_MODULE) and n.split(".")[1] != own.split(".")[1] for n in names):
            line = getattr(node, "lineno", 0)
            found.append(f"{rel}:{line}: {ast.get_source_segment(source, node)}")
    return found


def test_no_test_module_imports_another_test_module() -> None:
    files = sorted(path.relative_to(ROOT).as_posix() for path in TESTS.glob("*.py"))
    assert "tests/test_layout.py" in files and "tests/factories.py" in files
    violations = [
        v for rel in files for v in scan_test_imports(rel, (ROOT / rel).read_text(encoding="utf-8"))
    ]
    assert not violations, (
        "a test module imports from another test module; move the helper to a kit "
        "(tests/factories.py, tests/simkit.py, tests/reportkit.py, ...):\n" + "\n".join(violations)
    )


def test_the_test_import_scan_catches_every_form() -> None:
    planted = {
        "tests/test_alerts.py": "from tests.test_rules import add_batch, rule\n",
        "tests/test_daemon.py": "import tests.test_batches\n",
        "tests/test_report_html.py": "from tests import conftest, test_report\n",
        "tests/test_retention.py": "from .test_rollups import NOW\n",
        "tests/test_summary.py": "from . import test_rollups\n",
        "tests/test_collect.py": "def f():\n    importlib.import_module('tests.test_batches')\n",
    }
    found = sorted(
        v.split(": ")[0] for rel, text in planted.items() for v in scan_test_imports(rel, text)
    )
    assert found == [
        "tests/test_alerts.py:1",
        "tests/test_collect.py:2",
        "tests/test_daemon.py:1",
        "tests/test_report_html.py:1",
        "tests/test_retention.py:1",
        "tests/test_summary.py:1",
    ]
    fine = {
        "tests/test_alerts.py": "from tests.factories import rule\nfrom tests import conftest\n",
        "tests/test_report.py": "from tests.reportkit import WEEK2\nimport tests.testdata\n",
        "tests/test_rules.py": "from tests.test_rules import rule\n",  # itself
    }
    for rel, text in fine.items():
        assert scan_test_imports(rel, text) == [], rel

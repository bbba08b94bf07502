"""Package-level rules: imports on a CPU-only machine without TensorRT, a CLI whose help works anywhere,
and the size budgets that keep modules readable."""

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
from import_graph import cycles, imports, module_graph, package_of

import videorope_trt
from videorope_trt.cli import COMMANDS

ROOT = Path(videorope_trt.__file__).parent
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules():
    return sorted(m.name for m in pkgutil.walk_packages([str(ROOT)], "videorope_trt."))


def test_every_module_imports_without_tensorrt():
    # A fresh interpreter in which `import tensorrt` / `import tensorrt_rtx` fail, as on a machine without them.
    code = (
        "import sys\n"
        "for name in ('tensorrt', 'tensorrt_rtx', 'tensorrt_bindings', 'tensorrt_rtx_bindings'):\n"
        "    sys.modules[name] = None\n"
        "import importlib\n"
        f"for m in {_modules()!r}:\n"
        "    importlib.import_module(m)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


def test_package_import_is_light():
    code = ("import sys, videorope_trt, videorope_trt.rope; "
            "print(sorted({'torch', 'onnx', 'tensorrt'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command):
    out = subprocess.run(
        [sys.executable, "-m", "videorope_trt.cli", command, "--help"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "usage: videorope-trt " + command in out.stdout


def test_command_modules_expose_the_command_interface():
    for name, (module, _) in COMMANDS.items():
        mod = importlib.import_module(f"videorope_trt.commands.{module}")
        assert callable(getattr(mod, "add_arguments", None)) and callable(getattr(mod, "run", None)), name


def test_no_arguments_prints_usage():
    out = subprocess.run([sys.executable, "-m", "videorope_trt.cli"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "make-tiny" in out.stdout


def _functions(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1


def test_module_and_function_size_budgets():
    over = []
    for path in sorted(ROOT.rglob("*.py")):
        text = path.read_text()
        lines = len(text.splitlines())
        rel = path.relative_to(ROOT.parent)
        if lines > MAX_MODULE_LINES:
            over.append(f"{rel}: {lines} lines (budget {MAX_MODULE_LINES})")
        for name, n in _functions(ast.parse(text)):
            if n > MAX_FUNCTION_LINES:
                over.append(f"{rel}:{name}: {n} lines (budget {MAX_FUNCTION_LINES})")
    assert not over, "\n".join(over)


def test_tensorrt_is_imported_in_one_place():
    importers = []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] in ("tensorrt", "tensorrt_rtx") for n in names):
                importers.append(str(path.relative_to(ROOT)))
    assert set(importers) <= {"trt.py"}, importers


#: package → the packages it must never import (layers point downward: artifact at the bottom, then rope, media,
#: models and plugins, then export, calibration, build, runtime, then eval (which runs models through runtime), and
#: the command line on top).
FORBIDDEN = {
    "artifact": {"rope", "media", "models", "plugins", "export", "calibration", "build", "runtime", "eval", "serve",
                 "commands", "cli"},
    "rope": {"plugins", "media", "models", "export", "calibration", "build", "runtime", "eval", "serve", "commands",
             "cli"},
    "media": {"models", "export", "calibration", "build", "runtime", "eval", "serve", "commands", "cli"},
    "export": {"calibration", "build", "runtime", "eval", "serve", "commands", "cli"},
    "calibration": {"build", "runtime", "eval", "serve", "commands", "cli"},
    "build": {"calibration", "runtime", "eval", "serve", "commands", "cli"},
    "runtime": {"export", "calibration", "build", "eval", "serve", "commands", "cli"},
    "models": {"export", "calibration", "build", "runtime", "eval", "serve", "commands", "cli"},
    "plugins": {"export", "calibration", "build", "runtime", "eval", "serve", "commands", "cli"},
    "eval": {"export", "calibration", "build", "serve", "commands", "cli"},
    "serve": {"export", "calibration", "commands", "cli"},
    "commands": {"cli"},
}


def test_layers_import_only_downward():
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        package = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        for module in imports(path):
            if package_of(module) in FORBIDDEN.get(package, ()):
                wrong.append(f"{rel} imports {module}")
    assert not wrong, "\n".join(sorted(wrong))


def test_layer_test_sees_a_forbidden_import(tmp_path):
    """The import-edge check itself: a runtime module importing export is found."""
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from videorope_trt.export.exporter import export_checkpoint\n")
    assert package_of(next(iter(sorted(imports(bad))))) in FORBIDDEN["runtime"]


def test_no_modules_import_each_other_in_a_loop():
    """Within a layer too, modules import downward (a function-level import counts as well)."""
    assert cycles(module_graph(ROOT)) == []


def test_loop_check_sees_a_loop_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "videorope_trt"
    (pkg / "eval").mkdir(parents=True)
    for name in ("__init__.py", "eval/__init__.py"):
        (pkg / name).write_text("")
    (pkg / "eval/a.py").write_text("from videorope_trt.eval.b import f\n")
    (pkg / "eval/b.py").write_text("def f():\n    from videorope_trt.eval import a\n")
    (pkg / "eval/c.py").write_text("from videorope_trt.eval import a\n")  # imports into the loop, is not in it
    assert cycles(module_graph(pkg)) == [("videorope_trt.eval.a", "videorope_trt.eval.b")]

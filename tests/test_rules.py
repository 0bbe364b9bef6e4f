"""The project's own rules, checked: the library never imports Streamlit; nothing unpickles unsafely."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def python_files(folder: str):
    return sorted((ROOT / folder).rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_library_never_imports_streamlit():
    offenders = [str(p.relative_to(ROOT)) for p in python_files("explore") if "streamlit" in imported_modules(p)]
    assert offenders == []


def test_importing_the_library_does_not_load_streamlit():
    code = ("import sys, explore.training.train, explore.training.jobs, explore.training.store, explore.data, explore.models.registry; "
            "print('streamlit' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_every_torch_load_is_weights_only():
    for path in python_files("explore"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "load" \
                    and getattr(node.func.value, "id", "") == "torch":
                keywords = {k.arg: k.value for k in node.keywords}
                assert "weights_only" in keywords and getattr(keywords["weights_only"], "value", None) is True, \
                    f"{path.relative_to(ROOT)}:{node.lineno} torch.load without weights_only=True"


def test_no_pickle_module_in_the_library():
    for path in python_files("explore"):
        assert "pickle" not in imported_modules(path), path

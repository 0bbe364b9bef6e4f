"""explore.settings is the one reader of the environment: each process setting, and a rule that keeps it so."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from explore import settings
from explore.data.folder import default_cache_dir
from explore.training.jobs import default_worker_count
from explore.training.store import default_runs_root

ROOT = Path(__file__).resolve().parents[1]


def test_paths_follow_the_environment_and_default_beside_the_working_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("EXPLORE_RUNS_DIR", raising=False)
    monkeypatch.delenv("EXPLORE_CACHE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert settings.runs_dir() == Path("runs") == default_runs_root()
    assert settings.cache_dir() == tmp_path / ".explore_cache"
    assert default_cache_dir() == str(tmp_path / ".explore_cache")  # the decode cache asks settings
    monkeypatch.setenv("EXPLORE_RUNS_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("EXPLORE_CACHE_DIR", str(tmp_path / "cache"))
    assert default_runs_root() == tmp_path / "elsewhere"  # read at each call: a worker's own env counts
    assert default_cache_dir() == str(tmp_path / "cache")


@pytest.mark.parametrize("name, reader, values", [
    ("EXPLORE_DEMO_SMALL", settings.demo_small, {"1": True, "0": False, "": False}),
    ("EXPLORE_OFFLINE", settings.offline, {"1": True, "yes": True, "0": False, "": False}),
    ("EXPLORE_REUSE_MEMORY", settings.reuse_memory, {"0": False, "1": True, "": True}),
    ("EXPLORE_BUNDLE_CACHE", settings.bundle_cache, {"0": False, "": True}),
    ("EXPLORE_THREADS", settings.cpu_threads, {"3": 3, "": None}),
    ("EXPLORE_MAX_JOBS", settings.max_jobs, {"2": 2, "": None}),
    ("EXPLORE_EXECUTOR", settings.executor_name, {"thread": "thread", "": None}),
])
def test_each_process_setting_reads_its_variable(monkeypatch, name, reader, values):
    for text, expected in values.items():
        monkeypatch.setenv(name, text)
        assert reader() == expected, (name, text)


def test_the_job_manager_sizes_its_workers_from_settings(monkeypatch):
    monkeypatch.setenv("EXPLORE_MAX_JOBS", "3")
    assert default_worker_count() == 3


def test_a_child_process_gets_this_environment_with_changes(monkeypatch):
    monkeypatch.setenv("EXPLORE_THREADS", "2")
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    env = settings.child_environment({"EXPLORE_RUNS_DIR": "/tmp/r"}, drop=("EXPLORE_THREADS",))
    assert env["EXPLORE_RUNS_DIR"] == "/tmp/r" and "EXPLORE_THREADS" not in env
    assert settings.python_path_with("/repo").split(":") == ["/repo", "/somewhere"]


def reads_of_the_environment(path: Path) -> list[str]:
    """os.environ / os.getenv / os.putenv used anywhere in a file (reads and writes alike)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "putenv", "unsetenv"):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
        if isinstance(node, ast.ImportFrom) and node.module == "os" and any(a.name in ("environ", "getenv")
                                                                             for a in node.names):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_only_settings_reads_the_environment():
    files = list((ROOT / "explore").rglob("*.py")) + list((ROOT / "pages").glob("*.py")) + [ROOT / "streamlit_app.py"]
    offenders = [hit for path in files if path != ROOT / "explore" / "settings.py" for hit in reads_of_the_environment(path)]
    assert not offenders, f"read the environment through explore.settings: {offenders}"

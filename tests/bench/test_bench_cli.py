"""Every benchmark script starts and documents each of its options (``--help``), without a GPU or a cluster."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

SCRIPTS = sorted(p for p in (REPO_ROOT / "bench").glob("*.py") if not p.name.startswith("_"))
OPTION = re.compile(r"^  (?:-\w, )?(--[\w-]+)(?: [A-Z_]+| \{[^}]*\}| \[[^]]*\])*(\s{2,}\S.*)?$")


def undocumented(help_text: str) -> list[str]:
    """Options of an argparse help text with no description (on their line or the next)."""
    lines = help_text.splitlines()
    missing = []
    for i, line in enumerate(lines):
        m = OPTION.match(line)
        if not m or m.group(1) == "--help" or m.group(2):
            continue
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if not re.match(r"^\s{6,}[^\s-]", following):
            missing.append(m.group(1))
    return missing


def test_undocumented_finds_an_option_without_help() -> None:
    text = "options:\n  -h, --help  show\n  --tiles TILES  tiles\n  --obs-per-tile OBS_PER_TILE\n  --x X\n"
    assert undocumented(text) == ["--obs-per-tile", "--x"]
    assert undocumented("  --long-name LONG_NAME\n                        its text\n") == []


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_help_documents_every_option(script) -> None:
    proc = subprocess.run([sys.executable, str(script), "--help"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("usage:"), proc.stdout[:500]
    assert not undocumented(proc.stdout), f"{script.name}: options without help: {undocumented(proc.stdout)}"


def test_ingest_refuses_a_baseline_that_is_no_commit_before_writing_anything() -> None:
    script = REPO_ROOT / "bench" / "ingest.py"
    proc = subprocess.run([sys.executable, str(script), "--baseline", "no-such-ref-0123"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "--baseline 'no-such-ref-0123' names no commit" in proc.stderr
    assert "Traceback" not in proc.stderr and "wrote" not in proc.stdout


def _load_ingest():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_ingest", REPO_ROOT / "bench" / "ingest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CHILD = """
import sys
sys.path.insert(0, {bench!r})
import ingest  # puts GAIR_BENCH_SRC first on sys.path, as a --measure-ray pass does
import ray
ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
try:
    ingest.check_workers_import_this_gair()
    print("gair:", ingest._gair_file())
finally:
    ray.shutdown()
"""


def test_a_baseline_pass_imports_the_baseline_gair_in_its_ray_workers(tmp_path) -> None:
    """The pass of --baseline REF runs REF's gair in the Ray workers too (where decode runs), not only in its
    driver: Ray puts the driver's working directory first on the workers' sys.path."""
    import shutil

    tree = tmp_path / "baseline"
    shutil.copytree(REPO_ROOT / "gair", tree / "gair", ignore=shutil.ignore_patterns("__pycache__"))
    ingest = _load_ingest()
    env, cwd = ingest.pass_env(str(tree))
    child = CHILD.format(bench=str(REPO_ROOT / "bench"))
    proc = subprocess.run([sys.executable, "-c", child], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"gair: {(tree / 'gair' / '__init__.py').resolve()}" in proc.stdout
    # From the repository's directory (what the bench did before) the workers import the repository's gair,
    # and the check says so instead of measuring a mix of the two trees.
    proc = subprocess.run([sys.executable, "-c", child], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode != 0
    assert "the Ray workers import" in proc.stderr and str(REPO_ROOT / "gair") in proc.stderr

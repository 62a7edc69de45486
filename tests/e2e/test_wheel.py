"""A wheel built from the repo carries flows, tasks, deployments and templates, and works in a clean venv."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
    )
    [built] = out.glob("qmsflow-*.whl")
    return built


def test_wheel_contains_the_whole_product(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "flows/document_review_scan.py",
        "tasks/store.py",
        "deployments/__init__.py",
        "qmsflow/cli/main.py",
        "qmsflow/store/migrations/env.py",
        "qmsflow/store/migrations/versions/0001_initial.py",
        "qmsflow/_bundled/templates/documents/SOP-DOC-001.md.j2",
        "qmsflow/_bundled/templates/scaffold/qms.yaml.j2",
    ):
        assert required in names, required
    assert not any(n.startswith(("tests/", "bench/")) for n in names)


def test_wheel_works_in_a_clean_venv(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    install = subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "-q", str(wheel)], capture_output=True, text=True, timeout=900
    )
    assert install.returncode == 0, install.stderr[-3000:]
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "DO_NOT_TRACK": "1"}
    if "CI" in os.environ:
        env["CI"] = os.environ["CI"]
    outside = tmp_path / "outside"  # nowhere near the source tree
    outside.mkdir()

    def qms(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(bin_dir / "qms"), *args], cwd=outside, env=env, capture_output=True, text=True, timeout=300
        )

    assert qms("--help").returncode == 0
    demo = qms("demo", "demo")
    assert demo.returncode == 0, demo.stderr
    check = qms("check", "-c", "demo/qms.yaml")
    assert check.returncode == 0, check.stderr
    assert "aspects assigned to a process: 13/13" in check.stdout
    verify = qms("verify", "-c", "demo/qms.yaml")
    assert verify.returncode == 0 and "OK:" in verify.stdout
    # the flow modules import from the installed wheel, not from the source tree
    where = subprocess.run(
        [str(bin_dir / "python"), "-c", "import flows.document_review_scan as m; print(m.__file__)"],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
    )
    assert "site-packages" in where.stdout, where.stderr

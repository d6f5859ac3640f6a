"""The generated code in project/catalog/grpc_gen/ is what scripts/compile-protos makes."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_generated_code_is_reproducible(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    for name in ("protos", "scripts", "project"):
        shutil.copytree(Path(REPO, name), copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run([str(copy / "scripts" / "compile-protos")], check=True, env=env, cwd=copy)
    committed = Path(REPO, "project", "catalog", "grpc_gen")
    generated = copy / "project" / "catalog" / "grpc_gen"
    differences = []

    def compare(report: filecmp.dircmp) -> None:
        differences.extend(report.left_only + report.right_only + report.diff_files)
        for sub in report.subdirs.values():
            compare(sub)

    compare(filecmp.dircmp(committed, generated, ignore=["__pycache__"]))
    assert differences == []

"""A wheel carries the presets and search spaces, and an installed copy finds them through the package."""

import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.helpers import REPO

SHIPPED = {
    "study/presets/demo.yaml",
    "study/presets/paper.yaml",
    "study/search_spaces/finetune.yaml",
    "study/search_spaces/composite.yaml",
    "study/search_spaces/strategy.yaml",
}

FIND_THEM = """
from study.config import load_config
from study.sweeps.space import find_search_space, load_search_space
config = load_config("demo")
space = find_search_space("finetune")
load_search_space(space, config)
import study
print(study.__file__)
print(space)
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built from a copy of the sources (``pip wheel --no-deps``, offline: no build isolation)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    for package in ("components", "study"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(out)]
    built = subprocess.run([*command, str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    return next(out.glob("pelvis_landmark_study-*.whl"))


@pytest.mark.slow
@pytest.mark.timeout(600)  # above the build's and the run's 300 s
def test_the_wheel_ships_the_presets_and_search_spaces(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert SHIPPED.issubset(names)
    assert not any(name.startswith(("tests/", "benchmarks/")) for name in names)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_an_installed_copy_finds_them_through_the_package(wheel, tmp_path):
    target = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr
    # run away from the source tree, with only the installed copy of the package on the path
    environment = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    found = subprocess.run(
        [sys.executable, "-c", FIND_THEM], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300
    )
    assert found.returncode == 0, found.stderr
    module, space = found.stdout.split()
    assert module.startswith(str(target)) and space == str(target / "study" / "search_spaces" / "finetune.yaml")

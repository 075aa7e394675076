"""pyproject.toml and environment.yaml must describe the same environment."""

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _conda_pip_section() -> list[str]:
    environment = yaml.safe_load((ROOT / "environment.yaml").read_text())
    sections = [entry for entry in environment["dependencies"] if isinstance(entry, dict)]
    assert len(sections) == 1, "environment.yaml should have exactly one pip section"
    return sections[0]["pip"]


def test_conda_pip_section_matches_pyproject_dependencies() -> None:
    project = _pyproject()["project"]
    declared = set(project["dependencies"]) | set(project["optional-dependencies"]["test"])
    pip_entries = _conda_pip_section()
    requirements = {entry for entry in pip_entries if not entry.startswith("-e")}
    assert requirements == declared, (
        f"only in environment.yaml: {sorted(requirements - declared)}; "
        f"only in pyproject.toml: {sorted(declared - requirements)}"
    )
    assert "-e ." in pip_entries, "the pip section must install the project itself"


def test_conda_python_matches_requires_python() -> None:
    environment = yaml.safe_load((ROOT / "environment.yaml").read_text())
    python = next(
        entry
        for entry in environment["dependencies"]
        if isinstance(entry, str) and entry.startswith("python")
    )
    assert python.removeprefix("python") == _pyproject()["project"]["requires-python"]


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci_script = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme
    assert ci_script.strip().splitlines()[-1] == "make test"


def test_constraints_pin_a_matching_torch_pair() -> None:
    pins = dict(
        line.split("==")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    # torchvision 0.(N+15) is built against torch 2.N (0.29 <-> 2.14).
    torch_minor = int(pins["torch"].split(".")[1])
    vision_minor = int(pins["torchvision"].split(".")[1])
    assert vision_minor == torch_minor + 15

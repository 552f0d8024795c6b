"""The Dockerfiles and compose file stay in step with how the project installs and runs.

No Docker engine is needed: the files are parsed and checked against pyproject.toml, the
Makefile and the source tree.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = ["api.Dockerfile", "viewer.Dockerfile"]
IMAGE_EXTRA = {"api.Dockerfile": "serve", "viewer.Dockerfile": "viewer"}
"""The one extra each image installs on top of the base dependencies."""


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = (REPO / "docker" / name).read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def makefile_install() -> str:
    lines = [line for line in (REPO / "Makefile").read_text().splitlines() if "pip install" in line]
    installs = [line for line in lines if "constraints" in line]
    assert len(installs) == 1, f"expected one constrained pip install in the Makefile: {lines}"
    return installs[0]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_python_version_matches_the_project(name: str, pyproject: dict) -> None:
    args = dict(
        rest.split("=", 1) for kw, rest in instructions(name) if kw == "ARG" and "=" in rest
    )
    base = args["BASE_IMAGE"]
    match = re.fullmatch(r"python:(\d+\.\d+)-slim", base)
    assert match, f"{name}: default base image {base} is not python:X.Y-slim"
    version = match.group(1)
    assert pyproject["project"]["requires-python"] == f">={version}"
    assert pyproject["tool"]["mypy"]["python_version"] == version
    assert pyproject["tool"]["ruff"]["target-version"] == "py" + version.replace(".", "")
    froms = [rest for kw, rest in instructions(name) if kw == "FROM"]
    assert froms == ["${BASE_IMAGE}"], f"{name}: the base must stay overridable (CUDA builds)"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_install_is_the_makefiles_with_the_same_constraints(name: str, pyproject: dict) -> None:
    runs = [rest for kw, rest in instructions(name) if kw == "RUN" and "pip install" in rest]
    assert len(runs) == 1, f"{name}: expected one pip install"
    docker_words = shlex.split(runs[0].split("&&")[0])
    make_words = shlex.split(makefile_install().split("$(BIN)/python -m")[-1])
    constraints = make_words[make_words.index("-c") + 1]
    assert docker_words[docker_words.index("-c") + 1] == constraints == "constraints.txt"
    target = docker_words[-1]
    make_target = make_words[-1]  # '.[test]' editable in the venv; an image takes its own extra
    assert re.sub(r"\[.*\]", "", target) == re.sub(r"\[.*\]", "", make_target) == "."
    assert re.findall(r"\[(.*)\]", make_target) == ["test"]
    assert re.findall(r"\[(.*)\]", target) == [IMAGE_EXTRA[name]], (
        f"{name}: installs {target}, expected .[{IMAGE_EXTRA[name]}]")
    assert IMAGE_EXTRA[name] in pyproject["project"]["optional-dependencies"]
    assert "-e" not in docker_words, f"{name}: images install the package, not a link to it"


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~;\s]", r, maxsplit=1)[0].lower() for r in requirements}


def test_the_test_extra_is_every_runtime_extra(pyproject: dict) -> None:
    """``make test`` installs ``.[test]``: it must hold every image's and entry point's extra,
    and no extra may repeat a base dependency (one place for each pin range)."""
    extras = pyproject["project"]["optional-dependencies"]
    runtime = {"serve", "viewer", "train", "analysis", "quantize"}  # quantize: int8 tests
    assert runtime <= set(extras)
    (own,) = [r for r in extras["test"] if r.startswith("lggseg[")]
    assert set(own.removeprefix("lggseg[").removesuffix("]").split(",")) == runtime
    base = requirement_names(pyproject["project"]["dependencies"])
    for name in runtime:
        assert not base & requirement_names(extras[name]), f"[{name}] repeats a base dependency"
    # What only the API or only the viewer needs is not in the base install.
    assert {"fastapi", "uvicorn", "streamlit", "albumentations"}.isdisjoint(base)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_copied_paths_exist_and_cover_every_package(name: str, pyproject: dict) -> None:
    copies = [shlex.split(rest) for kw, rest in instructions(name) if kw == "COPY"]
    sources = [src for words in copies for src in words[:-1] if not src.startswith("--")]
    for src in sources:
        assert (REPO / src).exists(), f"{name}: COPY {src} does not exist"
    readme = pyproject["project"]["readme"]
    assert {"pyproject.toml", "constraints.txt", readme} <= set(sources)
    packages = [
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    for package in packages:
        assert package in sources, f"{name}: package {package}/ is not copied before install"
    ignore = (REPO / "docker" / f"{name}.dockerignore").read_text()
    for src in sources:
        pattern = f"!{src}/**" if (REPO / src).is_dir() else f"!{src}"
        assert pattern in ignore, f"{name}.dockerignore excludes {src}"


def test_commands_point_at_real_entry_points() -> None:
    api_cmd = [rest for kw, rest in instructions("api.Dockerfile") if kw == "CMD"][-1]
    assert '"-m", "inference.serve"' in api_cmd and (REPO / "inference" / "serve.py").is_file()
    assert '"--port", "8000"' in api_cmd and '"0.0.0.0"' in api_cmd
    viewer_cmd = [rest for kw, rest in instructions("viewer.Dockerfile") if kw == "CMD"][-1]
    assert '"streamlit", "run", "app/viewer.py"' in viewer_cmd
    assert (REPO / "app" / "viewer.py").is_file()
    assert '"--server.port", "8501"' in viewer_cmd
    for name in DOCKERFILES:
        assert any(kw == "HEALTHCHECK" for kw, _ in instructions(name)), name
        assert any(kw == "USER" for kw, _ in instructions(name)), f"{name} runs as root"


def test_compose_starts_api_and_viewer_with_healthchecks() -> None:
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    api, viewer = services["api"], services["viewer"]
    for service, dockerfile in ((api, "api.Dockerfile"), (viewer, "viewer.Dockerfile")):
        build = service["build"]
        assert (REPO / "docker" / build["context"]).resolve() == REPO
        assert (REPO / build["dockerfile"]).resolve() == REPO / "docker" / dockerfile
        assert "test" in service["healthcheck"]
    assert "8000:8000" in api["ports"] and "8501:8501" in viewer["ports"]
    assert viewer["environment"]["LGGSEG_API_URL"] == "http://api:8000"
    assert viewer["depends_on"]["api"]["condition"] == "service_healthy"
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    from inference.api.settings import ServeSettings

    for key in api.get("environment", {}):
        field = key.removeprefix("LGGSEG_SERVE_").lower()
        assert field in ServeSettings.model_fields, f"api environment {key}: no such setting"


def test_scaling_section_exists() -> None:
    readme = (REPO / "docker" / "README.md").read_text()
    assert "## Scaling out" in readme
    assert "--scale api=3" in readme and "replicas" in readme


def test_every_bundled_model_file_is_package_data(pyproject: dict) -> None:
    """The images install the project without -e: a weights, card or int8 file that no
    package-data pattern names would be missing from site-packages, and the engine would fall
    back without its int8 network."""
    from fnmatch import fnmatch

    patterns = pyproject["tool"]["setuptools"]["package-data"]["models"]
    shipped = sorted(p.name for p in (REPO / "models" / "weights").iterdir() if p.is_file())
    assert any(name.endswith(".int8.bin") for name in shipped)
    missing = [n for n in shipped if not any(fnmatch(f"weights/{n}", pat) for pat in patterns)]
    assert missing == []

"""Architecture: each layer imports only the layers above it (checked on the source, statically)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .conftest import REPO

PACKAGE = REPO / "platform" / "fairweather"
SCIENCE = ("vlm", "models", "losses", "encoders", "synth", "tiny", "imaging")

#: layer -> imports it must not make (prefix match on the imported module name)
FORBIDDEN = {
    # contracts may import only fairweather.contracts (see ALLOWED_IN_CONTRACTS) of the package
    "contracts": ("torch", "ray", "mlflow", "transformers", "open_clip", "vllm", "fairweather"),
    "science": ("ray", "mlflow", "fairweather.stages", "fairweather.cli"),
    "stages": ("fairweather.cli",),
}
ALLOWED_IN_CONTRACTS = ("fairweather.contracts",)


def layer_of(path: Path) -> str | None:
    top = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    if top == "contracts":
        return "contracts"
    if top in SCIENCE:
        return "science"
    if top == "stages":
        return "stages"
    return None


def imported_modules(path: Path) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.append(node.module)
    return modules


def violations(path: Path, layer: str) -> list[str]:
    found = []
    for module in imported_modules(path):
        if layer == "contracts" and module.startswith(ALLOWED_IN_CONTRACTS):
            continue
        for banned in FORBIDDEN[layer]:
            if module == banned or module.startswith(banned + "."):
                found.append(f"{path.relative_to(REPO)} ({layer}) imports {module}")
    return found


def package_files() -> list[tuple[Path, str]]:
    return [(p, layer) for p in sorted(PACKAGE.rglob("*.py")) if (layer := layer_of(p))]


def test_layers_import_only_upwards():
    files = package_files()
    assert {layer for _, layer in files} == {"contracts", "science", "stages"}
    problems = [v for path, layer in files for v in violations(path, layer)]
    assert not problems, "\n".join(problems)


def test_mlflow_only_in_the_tracking_module():
    users = [
        p.name for p in PACKAGE.rglob("*.py") if any(m.startswith("mlflow") for m in imported_modules(p))
    ]
    assert users == ["tracking.py"]


@pytest.mark.parametrize("job", sorted((REPO / "jobs").glob("*.py")), ids=lambda p: p.name)
def test_jobs_are_thin(job):
    heavy = [
        m for m in imported_modules(job) if m.split(".")[0] in ("torch", "ray", "mlflow", "transformers")
    ]
    assert not heavy, f"{job.name} should only parse, configure and call a stage: imports {heavy}"


def test_no_top_level_platform_module_shadows_the_standard_library():
    assert not (REPO / "platform" / "__init__.py").exists() and not (REPO / "platform.py").exists()
    import platform

    assert callable(platform.system)

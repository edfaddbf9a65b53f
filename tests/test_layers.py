"""Architecture: each layer imports only the layers above it (checked on the source, statically).

An import is an ``import`` statement (at the top or inside a function). Modules are never named by strings for
``importlib`` across packages (the CLI imports each stage inside a small function): the one ``import_module`` left is
the tiny models' builder table, inside the ``tiny`` package itself, and a test keeps it that way.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .conftest import REPO

PACKAGE = REPO / "platform" / "fairweather"
#: The science packages, each allowed to import only those before it (and contracts): no cycles inside the layer.
SCIENCE_ORDER = (
    "imaging",
    "vlm",
    "tiny",  # the tiny LLaVA's tokenizer learns the vlm prompts; vlm gets tiny models as resolved folders
    "encoders",
    "synth",
    "models",
    "losses",
    "metrics",
    "pseudo",
    "data",
    "training",
)
SCIENCE = frozenset(SCIENCE_ORDER)
#: The stage packages, each allowed to import only those before it: the folder tree is the architecture.
STAGE_ORDER = (
    "infra",
    "engine",  # restore-and-score, shared by evaluate and pseudolabel
    "synth",
    "label",
    "restore",
    "evaluate",
    "pseudolabel",
    "train",
    "sweep",
    "pipeline",
)
#: Top-level entries of the package outside the three checked layers: faces, package data, markers.
UNLAYERED = {"__init__", "cli", "profiles", "py.typed"}

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


def imported_modules_of(source: str) -> list[str]:
    """Absolute imports of a module's source (top level and inside functions)."""
    modules = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.append(node.module)
    return modules


def imported_modules(path: Path) -> list[str]:
    return imported_modules_of(path.read_text())


def science_package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "fairweather" and parts[1] in SCIENCE else None


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


def test_every_package_module_has_a_layer():
    tops = {
        p.name.removesuffix(".py") for p in PACKAGE.iterdir() if not p.name.startswith((".", "__pycache__"))
    }
    unplaced = tops - SCIENCE - UNLAYERED - {"contracts", "stages"}
    assert not unplaced, f"place {sorted(unplaced)} in SCIENCE_ORDER (or another layer) of this test"


def test_science_packages_import_only_earlier_science_packages():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if own not in SCIENCE:
            continue
        for module in imported_modules(path):
            other = science_package(module)
            if other and other != own and SCIENCE_ORDER.index(other) > SCIENCE_ORDER.index(own):
                problems.append(f"{path.relative_to(REPO)} ({own}) imports {module} ({other} comes later)")
    assert not problems, "\n".join(problems)


def stage_package(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["fairweather", "stages"] else None


def test_stages_are_packages_in_order():
    stages = PACKAGE / "stages"
    loose = sorted(p.name for p in stages.glob("*.py") if p.name != "__init__.py")
    assert not loose, f"every stage module belongs to a stage package, not stages/ itself: {loose}"
    packages = {p.name for p in stages.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(STAGE_ORDER)
    problems = []
    for path in sorted(stages.rglob("*.py")):
        own = path.relative_to(stages).parts[0]
        if own not in STAGE_ORDER:
            continue
        for module in imported_modules(path):
            other = stage_package(module)
            if other and other != own and STAGE_ORDER.index(other) > STAGE_ORDER.index(own):
                problems.append(f"{path.relative_to(REPO)} ({own}) imports {module} ({other} comes later)")
    assert not problems, "\n".join(problems)


def test_no_module_is_imported_by_a_string_across_packages():
    """``importlib`` hides a dependency from the checks above: only the tiny models' builders (modules of the
    ``tiny`` package, loaded by the package itself) are looked up by name."""
    users = sorted(
        str(p.relative_to(REPO))
        for p in [*PACKAGE.rglob("*.py"), *(REPO / "jobs").glob("*.py")]
        if "import_module" in p.read_text() or "__import__(" in p.read_text()
    )
    assert users == ["platform/fairweather/tiny/__init__.py"], users
    from fairweather.tiny import BUILDERS

    assert all(target.startswith("fairweather.tiny.") for target in BUILDERS.values())


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

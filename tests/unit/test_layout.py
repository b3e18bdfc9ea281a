"""The engine's layout stays as docs/architecture.md draws it: imports run from the front ends
down to the numerics, never back, and the RELION and cryoSPARC adapters use only public names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "pupick_ext"

#: lowest first: a module may import from its own layer and the layers before it
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("settings", "progress"),
    ("io",),
    ("prep",),
    ("network",),
    ("parallel",),
    ("pick",),
    ("pretrained",),
    ("training",),
    ("api",),
    ("reports",),
    ("demo",),
    ("parameters", "click_render"),
    ("cli",),
)
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}
#: ``python -m pupick_ext.pretrained.build`` is a script that runs the whole engine
SCRIPTS = {"pupick_ext.pretrained.build"}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[str]:
    """Absolute names of the pupick_ext modules (or package attributes) ``path`` imports."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None:  # ``from . import x``: x is a module, or the version string
                found += [f"{target}.{a.name}" for a in node.names if a.name != "__version__"]
            else:
                found.append(target)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names]
    return [t for t in found if t == "pupick_ext" or t.startswith("pupick_ext.")]


def _unit(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the package itself (the public API)


def test_every_engine_unit_has_a_layer() -> None:
    units = {p.stem if p.is_file() else p.name for p in ENGINE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert units == set(RANK), "add the new module or subpackage to LAYERS (and docs/architecture.md)"


def test_engine_imports_point_down_the_layers() -> None:
    wrong = []
    for path in sorted(ENGINE.rglob("*.py")):
        module = _module(path)
        source = _unit(module)
        if source is None or module in SCRIPTS:
            continue
        for target in _imports(path):
            unit = _unit(target)
            if unit is None:
                wrong.append(f"{module} imports the public API package {target}")
            elif RANK[unit] > RANK[source]:
                wrong.append(f"{module} ({source}) imports {target} ({unit}), a higher layer")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("adapter", ["relion_wrapper", "cryosparc_wrapper"])
def test_adapters_use_only_the_public_api(adapter: str) -> None:
    internal = [f"{path.relative_to(ROOT)}: {target}" for path in sorted((ROOT / adapter).rglob("*.py"))
                for target in _imports(path) if target != "pupick_ext"]
    assert not internal, "\n".join(internal)

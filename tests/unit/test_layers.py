"""Every module of the package has its place in the import layers that lint-imports checks, so a
new module cannot slip in outside the contract."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path

import zoho_moodle_sync

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_every_top_level_module_is_in_a_layer() -> None:
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    [layers] = [c["layers"] for c in contracts if c["type"] == "layers"]
    layered = {name.strip() for layer in layers for name in layer.split("|")}
    modules = {
        f"zoho_moodle_sync.{module.name}"
        for module in pkgutil.iter_modules(zoho_moodle_sync.__path__)
        if module.name != "__main__"
    }

    assert modules - layered == set()
    assert layered - modules == set()

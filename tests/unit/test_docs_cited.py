"""Every ``docs/...`` page the product's docstrings and messages cite is in the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pupick_ext", "relion_wrapper", "cryosparc_wrapper")
CITATION = re.compile(r"\bdocs/[A-Za-z0-9_.-]*[A-Za-z0-9_-]\.(?:md|sh)\b")


def test_cited_docs_exist() -> None:
    cited: dict[str, list[str]] = {}
    for package in PACKAGES:
        for source in sorted((ROOT / package).rglob("*.py")):
            for page in CITATION.findall(source.read_text(encoding="utf-8")):
                cited.setdefault(page, []).append(str(source.relative_to(ROOT)))
    assert "docs/method.md" in cited  # the method notes the engine's docstrings point to
    missing = {page: where for page, where in cited.items() if not (ROOT / page).is_file()}
    assert not missing, f"cited but not in the repository: {missing}"

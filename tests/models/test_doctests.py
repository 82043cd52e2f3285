"""The examples in the docstrings of the pure model modules run and say what the code does."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

from models import calibration, campaigns, evidence, graph, templates

# Public objects that must carry at least one example.
DOCUMENTED = {
    evidence: ["lower_bound", "upper_bound", "stable_hash", "window_evidence", "EvidenceMemory"],
    calibration: ["TailCalibrator", "TailCalibrator.exceedance", "TailCalibrator.threshold"],
    templates: ["TemplateIndex", "TemplateIndex.assign", "TemplateIndex.canonical"],
    graph: ["components"],
    campaigns: ["CampaignLinker", "summarize"],
}


@pytest.mark.parametrize("module", list(DOCUMENTED), ids=lambda m: m.__name__)
def test_docstring_examples_pass(module: ModuleType) -> None:
    result = doctest.testmod(module, verbose=False, report=True)
    assert result.failed == 0
    assert result.attempted > 0


@pytest.mark.parametrize("module", list(DOCUMENTED), ids=lambda m: m.__name__)
def test_main_public_objects_have_examples(module: ModuleType) -> None:
    tests = {t.name: t for t in doctest.DocTestFinder().find(module)}
    for name in DOCUMENTED[module]:
        found = tests.get(f"{module.__name__}.{name}")
        assert found is not None and found.examples, f"{module.__name__}.{name} has no example"

"""The graph configuration shown in the README is one the graph accepts."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from contract.graph_config import GraphConfig

README = Path(__file__).resolve().parents[4] / "README.md"


def test_the_readme_graph_config_validates() -> None:
    text = README.read_text()
    section = text[text.index("**Configuration**") :]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    config = GraphConfig.model_validate(yaml.safe_load(block.group(1)))
    assert config.rerank.deny_items == ("1432",)
    assert config.model_versions == {"ranker_dcn": 2}
    assert config.budgets.total_ms == 50

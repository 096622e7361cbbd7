from __future__ import annotations

from pathlib import Path

from relay.docgen import render

REPO = Path(__file__).resolve().parents[2]


def test_configuration_reference_matches_the_models() -> None:
    written = (REPO / "docs" / "configuration.md").read_text()
    assert written == render(), "docs/configuration.md is stale: run `python -m relay.docgen > docs/configuration.md`"


def test_every_config_model_field_is_documented() -> None:
    text = render()
    for key in ("max_in_flight", "allow_private_network", "accepted_documents", "updated_field", "drain_grace"):
        assert f"| `{key}` |" in text

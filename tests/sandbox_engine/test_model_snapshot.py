"""The shipped type model is exactly what the schema says (regenerate with
``python -m tsl_exchange_plugin.sandbox.schema`` after a schema update)."""

from __future__ import annotations

import pytest

from tsl_exchange_plugin.sandbox import schema
from tsl_exchange_plugin.sandbox.engine import SandboxEngine


def test_shipped_model_equals_a_fresh_digest_of_the_schema():
    fresh = schema.Model(schema.find_schema_dir()).export()
    shipped = schema.Model.from_snapshot(schema.MODEL_SNAPSHOT).export()
    assert shipped == fresh


def test_without_the_schema_the_engine_says_it_does_not_validate(tmp_path, monkeypatch):
    monkeypatch.setattr(schema, "schema_dir", lambda: None)
    monkeypatch.setattr("tsl_exchange_plugin.sandbox.engine.schema_dir", lambda: None)
    engine = SandboxEngine(tmp_path)
    assert not engine.validate and "ohne Schema-Prüfung" in engine.validation_note
    assert SandboxEngine(tmp_path / "b", validate=False).validation_note == ""


def test_a_wrong_schema_variable_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(schema.SCHEMA_DIR_ENV, str(tmp_path))
    with pytest.raises(schema.SchemaNotFound, match="messages.xsd"):
        schema.find_schema_dir()

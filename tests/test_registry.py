"""The model registry's resolution rules (the end-to-end load is in test_model_pipeline)."""

import pytest

from curation.models import ROLES, ModelSourceError, describe, resolve


def test_sources_resolve_as_documented(tmp_path):
    role = "video_backbone"
    assert resolve(role) == resolve(role, "default") == ROLES[role].default
    assert "/" in ROLES[role].default  # a hub id, documented in the table
    assert resolve(role, "tiny") == "tiny"
    assert resolve(role, {"*": "tiny"}) == "tiny"
    assert resolve(role, {"captioner": "tiny"}) == ROLES[role].default  # other roles untouched
    assert resolve(role, {role: str(tmp_path)}) == str(tmp_path)
    assert resolve(role, "Org/some-model") == "Org/some-model"


def test_bad_sources_are_clear_errors(tmp_path):
    with pytest.raises(ModelSourceError, match="unknown model role 'captioner2'.*video_backbone"):
        resolve("captioner2", "tiny")
    with pytest.raises(ModelSourceError, match="does not exist"):
        resolve("video_backbone", str(tmp_path / "missing"))


def test_describe_lists_every_role():
    table = describe()
    for name, role in ROLES.items():
        assert name in table and role.default in table

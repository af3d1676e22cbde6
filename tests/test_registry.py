"""The model registry: resolution rules, and every registered string really imports."""

import subprocess
import sys

import pytest
from conftest import ROOT

import model  # noqa: F401 - registers the model package's roles, as any use of model/ does
from curation.models import ROLES, ModelSourceError, _import, describe, resolve


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


@pytest.mark.parametrize("name", sorted(ROLES))
def test_every_registered_loader_and_tiny_builder_imports(name):
    role = ROLES[name]
    for target in (role.loader, role.tiny):
        assert callable(_import(target)), f"{name}: {target} is not a function"


def test_curation_does_not_import_model():
    """The dependency points one way: importing every curation module never imports model/."""
    code = ("import importlib, pkgutil, sys, curation\n"
            "for m in pkgutil.walk_packages(curation.__path__, 'curation.'):\n"
            "    importlib.import_module(m.name)\n"
            "bad = sorted(k for k in sys.modules if k == 'model' or k.startswith('model.') or k == 'ray')\n"
            "print(bad); sys.exit(1 if bad else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]

"""The package's front door: cheap to import, every advertised name resolves."""

import subprocess
import sys

import pytest

import ddpm


def test_import_does_not_load_heavy_modules():
    code = "import sys, ddpm; print(sorted(m for m in ('torch', 'sympy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ddpm.__all__)
def test_every_export_resolves_to_its_module(name):
    obj = getattr(ddpm, name)
    assert getattr(obj, "__module__", "").startswith("ddpm.")


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        ddpm.no_such_thing  # noqa: B018

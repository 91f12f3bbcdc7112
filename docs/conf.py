"""Sphinx configuration of the pyroem documentation (build: ``.ci/docs``)."""

import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # document the working tree, installed or not
sys.path.insert(0, str(DOCS / "_ext"))

import pyroem

project = "pyroem"
author = "the pyroem developers"
copyright = "2026, the pyroem developers"
release = version = pyroem.__version__

extensions = [
    "sphinx.ext.autodoc",
    "mathml",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "myst_nb",
]

# Docstrings use Sphinx field lists (:param x:) and .. math::, so no napoleon.
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "none"
autodoc_mock_imports = []

intersphinx_mapping = {}  # offline builds: no inventories are fetched

# Tutorials: rendered from the stored outputs, never executed here (the test suite runs
# them, tests/test_notebooks.py). myst-nb reads the notebooks' markdown itself, so the
# build needs no pandoc.
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
suppress_warnings = ["mystnb.unknown_mime_type"]

source_suffix = {".rst": "restructuredtext", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

# Math is rendered to MathML at build time (docs/_ext/mathml.py): no CDN, no JavaScript,
# so every formula shows offline.
html_math_renderer = "mathml"

html_theme = "alabaster"
html_static_path = []
html_theme_options = {"description": "Exact EM for Pyro models", "fixed_sidebar": True}


def _copy_tutorials(app, config):
    # The notebooks live in tutorials/ at the repository root (where users run them);
    # Sphinx reads sources only below docs/, so mirror them into docs/tutorials/.
    target = DOCS / "tutorials"
    target.mkdir(exist_ok=True)
    wanted = {p.name for p in (ROOT / "tutorials").glob("*.ipynb")}
    for stale in target.glob("*.ipynb"):
        if stale.name not in wanted:
            stale.unlink()
    for name in wanted:
        src, dst = ROOT / "tutorials" / name, target / name
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copyfile(src, dst)


def setup(app):
    app.connect("config-inited", _copy_tutorials)

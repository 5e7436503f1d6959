"""Sphinx configuration: MyST pages, and the API reference generated from the docstrings."""

from __future__ import annotations

from typing import Any

import sphinx.util.inspect

import anydrop

project = "anydrop"
author = "The anydrop developers"
project_copyright = "the anydrop developers, BSD 3-Clause"
version = release = anydrop.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
# benchmarks/*.md are the benchmark's output, included by performance.md, not pages of their own.
exclude_patterns = ["_build", "benchmarks/*.md", "examples"]
templates_path = ["_templates"]

html_theme = "furo"
html_title = f"anydrop {release}"

# Heading anchors, so that links like [x](jax.md#what-to-know-under-tracing) work here and on GitHub.
myst_heading_anchors = 3

autosummary_generate = True
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
# A torch module's forward() without a docstring would inherit torch.nn.Module.forward's.
autodoc_inherit_docstrings = False
napoleon_google_docstring = False
napoleon_numpy_docstring = True
# A class's Parameters section documents its constructor's arguments: their types are in the
# signature, not those of same-named class attributes.
napoleon_attr_annotations = False

# Every cross-reference must resolve, except those into the array libraries, which have no
# pages here (there is no network access for intersphinx in every build environment).
nitpicky = True
# Type variables and aliases of anydrop's private modules (the Array type variable in the
# signatures) have no pages either: only the public import paths are documented.
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|jax|flax|numpy|cupy|dask|keras|equinox|eqx)(\..*)?"),
    (r"py:.*", r"(collections\.abc|typing)\..*"),
    (r"py:.*", r"anydrop\.(.*\.)?_[A-Za-z].*"),
]


def _init_signature(  # noqa: PLR0917
    app: Any, what: str, name: str, obj: Any, options: Any, signature: str | None, return_annotation: Any
) -> tuple[str | None, Any] | None:
    """The signature of ``__init__`` for classes whose metaclass's ``__call__`` hides it (flax.nnx)."""
    if what != "class" or signature != "(*args: Any, **kwargs: Any)":
        return None
    aliases = app.config.autodoc_type_aliases
    sig = sphinx.util.inspect.signature(obj.__init__, bound_method=True, type_aliases=aliases)
    short = app.config.autodoc_typehints_format == "short"
    text = sphinx.util.inspect.stringify_signature(
        sig, show_return_annotation=False, unqualified_typehints=short
    )
    return text, return_annotation


def setup(app: Any) -> None:
    app.connect("autodoc-process-signature", _init_signature)

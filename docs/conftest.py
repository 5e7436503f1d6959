"""pytest in docs/: the pages' ``>>>`` examples are doctests (``--doctest-glob="*.md"``).

The scripts in ``examples/`` run as scripts (``nox -s docs``), not on import, and the Sphinx
configuration is no test module.
"""

collect_ignore = ["conf.py", "_build", "generated"]
collect_ignore_glob = ["examples/*.py"]

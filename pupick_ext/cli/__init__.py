"""The ``pupick`` command line: ``commands`` holds the click group and its subcommands (train,
extract, evaluate, demo, ...), the top of the engine's import graph. ``main`` is
re-exported here for the console script ``pupick = "pupick_ext.cli:main"``, and
``__main__`` makes ``python -m pupick_ext.cli`` work.
"""

from .commands import main

__all__ = ["main"]

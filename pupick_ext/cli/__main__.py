"""``python -m pupick_ext.cli``: the ``pupick`` command."""

from .commands import main

if __name__ == "__main__":  # pragma: no cover
    main()

"""``python -m peel``: the same as the ``peel`` command."""

from peel.cli import main

main()

"""``python -m cdb``: the same as the ``cdb`` command."""

from cdb.cli import main

main()

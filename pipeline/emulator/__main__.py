"""``python -m pipeline.emulator``: serve the emulator (the flags of ``--help``)."""

from .server import main

main()

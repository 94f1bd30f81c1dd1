"""The command line: thin commands over the engine, the demo and its sample folders."""

from .commands import main

__all__ = ["main"]

"""``python -m mtop_edge``: the command line (guarded: spawned serve workers import this module)."""

from mtop_edge.cli import main

if __name__ == "__main__":
    main()

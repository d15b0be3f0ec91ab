"""``python -m graphsmile ...``: the ``graphsmile`` command (see :mod:`graphsmile.cli`)."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m jfb_core``: see :mod:`jfb_core.cli`."""

from jfb_core.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

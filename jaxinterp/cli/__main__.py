"""``python -m jaxinterp.cli``: the command line, as `main` (no CPU split, no compile cache: see `entry`)."""

import sys

from jaxinterp.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())

"""`python -m compliance …` runs the same CLI as the `compliance` console script."""

from __future__ import annotations

import sys

from compliance.cli.main import main

if __name__ == "__main__":
    sys.exit(main())

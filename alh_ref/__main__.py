"""``python -m alh_ref`` runs the ``alh-ref`` command line (alh_ref.cli)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

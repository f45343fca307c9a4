"""``python -m alh_ref.torch`` runs the torch backend's command line (alh_ref.torch.cli)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m mim`` is the same as the ``mim`` command."""
import sys

from mim.cli import main

sys.exit(main())

"""``python -m reinforced_data`` (and ``torchrun -m reinforced_data``): the ``reinforced-data`` command."""

import sys

from .cli import main

sys.exit(main())

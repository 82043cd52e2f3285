"""``python -m streams.cli``: the same as the ``distillguard`` command."""

import sys

from streams.cli import main

sys.exit(main())

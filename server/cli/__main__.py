"""``python -m regserve.server.cli``: the ``regserve`` command."""

import sys

from regserve.server.cli import main

sys.exit(main())

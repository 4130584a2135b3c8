"""``python -m clonesweep``: the same as the ``clonesweep`` command."""

import sys

from clonesweep.cli.main import main

sys.exit(main())

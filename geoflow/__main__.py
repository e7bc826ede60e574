"""``python -m geoflow ...``: the command line (:func:`geoflow.cli.main`)."""

import sys

from geoflow.cli import main

sys.exit(main())

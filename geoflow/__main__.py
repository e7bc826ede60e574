"""``python -m geoflow ...``: the command line (:func:`geoflow.cli.main`)."""

import sys

from geoflow.cli import main

if __name__ == "__main__":  # importing the module (as tools that walk the package do) runs nothing
    sys.exit(main())

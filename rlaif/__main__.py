import sys

from rlaif.cli import main

sys.exit(main())

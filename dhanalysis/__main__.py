import sys

from dhanalysis.cli import main

sys.exit(main())

import sys

from zoned.cli import main

sys.exit(main())

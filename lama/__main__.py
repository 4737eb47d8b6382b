import sys

from lama.cli import main

sys.exit(main())

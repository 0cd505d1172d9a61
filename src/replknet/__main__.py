import sys

from replknet.cli.main import main

sys.exit(main())

import sys

from scal3r.cli import main

sys.exit(main())

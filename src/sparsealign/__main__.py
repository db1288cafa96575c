import sys

from sparsealign.cli import main

sys.exit(main())

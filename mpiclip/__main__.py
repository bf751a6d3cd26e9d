import sys

from mpiclip.cli import main

sys.exit(main())

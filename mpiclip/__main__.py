import sys

from mpiclip.cli import program

sys.exit(program())

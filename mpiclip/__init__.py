"""mpiclip: communication-efficient and clipped distributed optimization on MPI ranks.

Importing the package is cheap and never imports mpi4py; only :mod:`mpiclip.comm.mpi` does, and only
when a communicator is created.
"""

__version__ = "0.1.0"
SCHEMA_VERSION = 2

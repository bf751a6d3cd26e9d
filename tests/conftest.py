import os
import sys

sys.path.insert(0, os.path.dirname(__file__))


def pytest_sessionfinish(session, exitstatus):
    """Under MPI, fail every rank if any rank failed (MPI_NOTES §3): the exit code carries the verdict."""
    if not session.config.getoption("--with-mpi", default=False):
        return
    from mpi4py import MPI

    failed = MPI.COMM_WORLD.allreduce(int(session.testsfailed), op=MPI.SUM)
    if failed and not session.testsfailed:
        print(f"\nMPI: {failed} test failure(s) on other ranks", flush=True)
        session.exitstatus = 1
    elif failed:
        session.exitstatus = 1

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))


def pytest_configure(config):
    """Parsed data files are cached in a directory of this test session (one per rank under MPI: a rank's
    view of the cache never depends on another's timing), never in the user's cache."""
    if "MPICLIP_CACHE" not in os.environ:
        import tempfile

        os.environ["MPICLIP_CACHE"] = config._mpiclip_cache = tempfile.mkdtemp(prefix="mpiclip-test-cache-")


def pytest_unconfigure(config):
    if getattr(config, "_mpiclip_cache", None):
        import shutil

        shutil.rmtree(config._mpiclip_cache, ignore_errors=True)


def pytest_sessionfinish(session, exitstatus):
    """Under MPI, fail every rank if any rank failed (docs/design.md §3): the exit code carries the verdict."""
    if not session.config.getoption("--with-mpi", default=False):
        return
    from mpi4py import MPI

    failed = MPI.COMM_WORLD.allreduce(int(session.testsfailed), op=MPI.SUM)
    if failed and not session.testsfailed:
        print(f"\nMPI: {failed} test failure(s) on other ranks", flush=True)
        session.exitstatus = 1
    elif failed:
        session.exitstatus = 1

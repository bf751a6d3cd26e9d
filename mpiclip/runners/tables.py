"""The tables the package's runners write beside their per-round rows (:class:`~mpiclip.runners.base.Table`).

They live apart from the runners so that a trace reader (:mod:`mpiclip.trace_contract`) knows every table
without importing the runners' loops (start-up: a synchronous run never imports the asynchronous one).
"""

from mpiclip.runners.base import Table

# One row per gradient that reached the server; job: the worker's job index, which keys the job's random draws
EVENTS = Table("events", (("update", "i8"), ("worker", "i8"), ("start", "i8"), ("delay", "i8"), ("sim_time", "f8"),
                          ("norm", "f8"), ("clipped", "i1"), ("job", "i8")), bits=True)

CLIENTS = Table("clients", units="client id")  # one row per federated round: the clients sampled

"""Compression operators on the stacked vectors of a rank's workers (docs/design.md §4).

``C(v)`` takes ``v`` of shape (n_local, d), one row per local worker, and returns a :class:`Message`:
the payload that goes on the wire and the bits each worker sent under every encoding. The operator
that builds a message counts its bits; nothing downstream guesses. Importing this package registers
every compressor.
"""

from mpiclip.compressors import clipping, compose, quantizers, sparsifiers  # noqa: F401  (registers)
from mpiclip.compressors.base import COMPRESSORS, Compressor, build_compressor
from mpiclip.compressors.message import (
                                         ENCODINGS,
                                         INDEX_BYTES,
                                         VALUE_BYTES,
                                         ChunkedMessage,
                                         Cost,
                                         Message,
                                         dense_message,
                                         empty_message,
                                         message_bits,
                                         sparse_message,
)
from mpiclip.compressors.sparsifiers import Identity, KParams, RandK, RandKShared, RandKUnbiased, TopK, top_k_positions

__all__ = ["COMPRESSORS", "build_compressor", "Compressor", "ENCODINGS", "INDEX_BYTES", "VALUE_BYTES",
           "ChunkedMessage", "Cost", "Message", "dense_message", "empty_message", "message_bits", "sparse_message",
           "Identity", "KParams",
           "RandK", "RandKShared", "RandKUnbiased", "TopK", "top_k_positions"]

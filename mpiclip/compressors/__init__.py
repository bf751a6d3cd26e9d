"""Compression operators on the stacked vectors of a rank's workers (docs/design.md §4).

``C(v)`` takes ``v`` of shape (n_local, d), one row per local worker, and returns a :class:`Message`:
the payload that goes on the wire and the bits each worker sent under every encoding. The operator
that builds a message counts its bits; nothing downstream guesses. The sparsifiers (the identity among
them) are imported with the package; the other modules when one of their compressors is first looked up
(``MODULES``, start-up time).
"""

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

MODULES = {  # module -> the compressors it registers, in their listing order
    "quantizers": ("natural", "dithering", "sign"),
    "clipping": ("clip",),
    "compose": ("compose",),
    "sparsifiers": ("identity", "topk", "randk", "randk_unbiased", "randk_shared", "topk_ratio"),
}
for _module, _names in MODULES.items():
    COMPRESSORS.declare(f"{__name__}.{_module}", _names)

from mpiclip.compressors.sparsifiers import (  # noqa: E402  (after the declarations: it registers its names)
    Identity,
    KParams,
    RandK,
    RandKShared,
    RandKUnbiased,
    TopK,
    top_k_positions,
)

__all__ = ["COMPRESSORS", "build_compressor", "Compressor", "ENCODINGS", "INDEX_BYTES", "VALUE_BYTES",
           "ChunkedMessage", "Cost", "Message", "dense_message", "empty_message", "message_bits", "sparse_message",
           "Identity", "KParams",
           "RandK", "RandKShared", "RandKUnbiased", "TopK", "top_k_positions"]

"""The torch backend of the network problems (:mod:`mpiclip.problems.networks`): the only package that imports
torch, and only when a network problem is configured (extra ``torch``)."""

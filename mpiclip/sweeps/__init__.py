"""The sweep files that come with mpiclip: the papers' experiments (also reached as ``jobs/sweeps``).

``mpiclip sweep run ef21-logreg-a9a`` finds one by name; ``mpiclip reproduce`` runs them by family.
"""

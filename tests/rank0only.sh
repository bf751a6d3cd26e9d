#!/usr/bin/env bash
# Under mpiexec: rank 0 prints as usual, other ranks write mpitest-rank<N>.log (docs/design.md §3).
rank=${PMI_RANK:-${OMPI_COMM_WORLD_RANK:-${PMIX_RANK:-${SLURM_PROCID:-0}}}}
if [ "$rank" = "0" ]; then exec "$@"; fi
exec "$@" > "mpitest-rank$rank.log" 2>&1

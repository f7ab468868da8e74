"""Example workloads that ship with the package, runnable from any folder.

- :mod:`carbonscaler.examples.nbody`: the elastic N-body simulation, CarbonScaler's reference
  workload (``python -m carbonscaler.examples.nbody``; ``carbonscaler demo`` runs it).

Nothing is imported here: importing a workload module sets process-wide BLAS thread variables.
"""

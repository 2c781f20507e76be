"""Experiment tooling: in-process runs, results, sweeps, matrix, traces, reports, plots, benchmarks, cluster."""

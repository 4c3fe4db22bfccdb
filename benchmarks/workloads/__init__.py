"""One module per workload; each has ``run(ctx)``."""

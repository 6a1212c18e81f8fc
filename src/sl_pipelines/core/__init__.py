"""The pure core: no I/O. Tracker state machine, job scripts, Slurm parsing, pipeline decisions."""

"""Server-side workers: the commands that run inside Slurm jobs and report into a tracker."""

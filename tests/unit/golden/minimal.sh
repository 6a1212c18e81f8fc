#!/bin/bash
#SBATCH --job-name="hello"
#SBATCH --chdir="/work/sessions/p1/a1/s1/sl_jobs/run-1234/hello"
#SBATCH --output="/work/sessions/p1/a1/s1/sl_jobs/run-1234/hello/stdout.txt"
#SBATCH --error="/work/sessions/p1/a1/s1/sl_jobs/run-1234/hello/stderr.txt"
#SBATCH --cpus-per-task=1
#SBATCH --mem=1024M
#SBATCH --time=0-01:00:00

set -euo pipefail
cd -- /work/sessions/p1/a1/s1/sl_jobs/run-1234/hello

echo hello

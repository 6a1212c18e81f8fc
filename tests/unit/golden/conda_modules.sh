#!/bin/bash
#SBATCH --job-name="behavior"
#SBATCH --chdir="/work/sessions/p1/a1/s1/sl_jobs/run-1234/behavior"
#SBATCH --output="/work/sessions/p1/a1/s1/sl_jobs/run-1234/behavior/stdout.txt"
#SBATCH --error="/work/sessions/p1/a1/s1/sl_jobs/run-1234/behavior/stderr.txt"
#SBATCH --cpus-per-task=1
#SBATCH --mem=1024M
#SBATCH --time=0-01:00:00

set -euo pipefail
cd -- /work/sessions/p1/a1/s1/sl_jobs/run-1234/behavior

set +u
module load cuda/12.1 ffmpeg
eval "$(conda shell.bash hook)"
conda activate behavior-env
set -u

python -c 'print('"'"'it'"'"''"'"'s $HOME'"'"')'

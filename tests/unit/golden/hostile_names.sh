#!/bin/bash
#SBATCH --job-name="a b;rm -rf ~ \"q\" %j"
#SBATCH --chdir="/data/a b;$(touch x)`y` 'q' %j"
#SBATCH --output="/data/a b;$(touch x)`y` 'q' %%j/stdout.txt"
#SBATCH --error="/data/a b;$(touch x)`y` 'q' %%j/stderr.txt"
#SBATCH --cpus-per-task=1
#SBATCH --mem=1024M
#SBATCH --time=0-01:00:00

set -euo pipefail
cd -- '/data/a b;$(touch x)`y` '"'"'q'"'"' %j'

set +u
module load matlab/R2024a
set -u

cat 'a b;$(touch x)'

#!/bin/bash
#SBATCH --job-name="suite2p-plane-3"
#SBATCH --chdir="/work/sessions/p1/a1/s1/sl_jobs/run-1234/plane 3"
#SBATCH --output="/work/sessions/p1/a1/s1/sl_jobs/run-1234/plane 3/stdout.txt"
#SBATCH --error="/work/sessions/p1/a1/s1/sl_jobs/run-1234/plane 3/stderr.txt"
#SBATCH --cpus-per-task=4
#SBATCH --mem=8000M
#SBATCH --time=1-01:00:00
#SBATCH --partition=gpu
#SBATCH --account=lab-a
#SBATCH --qos=normal
#SBATCH --gres=gpu:1
#SBATCH --array=0-9%2
#SBATCH --dependency=afterok:123:456
#SBATCH --kill-on-invalid-dep=yes

set -euo pipefail
cd -- '/work/sessions/p1/a1/s1/sl_jobs/run-1234/plane 3'

set +u
source '/opt/envs/sl env/bin/activate'
set -u

export SL_TRACKER_LOCK=soft
export SESSION='a b;rm -rf ~'

sl-worker demo --plane 3
sl-tracker stop --manager-id 42

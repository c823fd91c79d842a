#!/bin/bash
# Zero-shot calibration images for one teacher as a Slurm job array: task I runs `kiln synthesize --shard I/8`,
# and a merge job that depends on the whole array joins the shards. The merged file is bit for bit what one
# `kiln synthesize` with the same flags makes.
#
#   sbatch slurm-array.sh teacher.onnx shards/        # submits the array and the dependent merge, prints both ids
#
# Every task must use the same flags, --threads and kiln build (`--merge` refuses shards of another run).
#SBATCH --job-name=kiln-synthesize
#SBATCH --array=0-7
#SBATCH --cpus-per-task=2
#SBATCH --mem=4G
#SBATCH --time=12:00:00
set -euo pipefail
teacher=${1:?usage: sbatch slurm-array.sh TEACHER.onnx OUTDIR}
out=${2:?usage: sbatch slurm-array.sh TEACHER.onnx OUTDIR}
shards=8
mkdir -p "$out"
if [ "${SLURM_ARRAY_TASK_ID:-0}" = "${SLURM_ARRAY_TASK_MIN:-0}" ] && [ -z "${KILN_MERGE_SUBMITTED:-}" ]; then
    # The first task submits the merge once, to run after every task of this array succeeded.
    sbatch --dependency="afterok:${SLURM_ARRAY_JOB_ID}" --job-name=kiln-merge --cpus-per-task=1 --mem=8G \
        --wrap="kiln synthesize --merge $out/part*.npy -o $out/calibration.npy"
fi
exec kiln synthesize "$teacher" --shard "${SLURM_ARRAY_TASK_ID}/$shards" -o "$out/part${SLURM_ARRAY_TASK_ID}.npy" \
    --count 1024 --batch 64 --iterations 200 --seed 0 --threads "${SLURM_CPUS_PER_TASK:-2}"

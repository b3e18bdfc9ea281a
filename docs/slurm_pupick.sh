#!/bin/bash
# RELION queue-submission template: pupick-relion as N processes on a SLURM cluster.
#
# RELION replaces the XXX...XXX words when it submits a job (Running tab, "Submit to queue?
# Yes"). Set these before starting the RELION GUI (or in the site's RELION module):
#
#   export RELION_QSUB_TEMPLATE=/path/to/pupick/docs/slurm_pupick.sh
#   export RELION_QSUB_COMMAND=sbatch
#   export RELION_QSUB_EXTRA_COUNT=2
#   export RELION_QSUB_EXTRA1="Number of pupick processes (ranks)"
#   export RELION_QSUB_EXTRA1_DEFAULT=4
#   export RELION_QSUB_EXTRA2="GPUs per process"
#   export RELION_QSUB_EXTRA2_DEFAULT=1
#
# XXXcommandXXX is RELION's External-job command line (pupick-relion --o External/jobNNN/
# --in_mics ... --j <threads> ...). srun starts it XXXextra1XXX times; each copy reads its
# rank from SLURM_PROCID and the number of ranks from SLURM_STEP_NUM_TASKS, picks micrographs
# rank, rank+N, ... (each bound to its CPUs and, with --gpus-per-task, its own GPU), and
# reports to rank 0, which writes the coordinate index, RELION_OUTPUT_NODES.star and the
# RELION_JOB_EXIT_* marker once every rank has finished. In mode train+extract rank 0 trains
# first while the others wait for its model (run training as its own one-process job to
# keep the allocation busy). All ranks append to the same run.out, each line tagged
# "[rank r/N]".
#
# CPU-only partition: delete the --gpus-per-task line (pupick then uses the CPU; with
# --cpus-per-task each rank uses the cores it is bound to).
#
# The same header works for the plain command line, e.g. in an sbatch script:
#   srun --kill-on-bad-exit=1 pupick extract -m CtfFind/job003/micrographs_ctf.star \
#        --model model/model.pupick -o picks/ --suffix _pupick
#
#SBATCH --job-name=XXXnameXXX
#SBATCH --partition=XXXqueueXXX
#SBATCH --ntasks=XXXextra1XXX
#SBATCH --cpus-per-task=XXXthreadsXXX
#SBATCH --gpus-per-task=XXXextra2XXX
#SBATCH --output=XXXoutfileXXX
#SBATCH --error=XXXerrfileXXX

# --kill-on-bad-exit: if one rank dies (node failure, out of memory), SLURM stops the others;
# rank 0 then writes RELION_JOB_EXIT_FAILURE instead of waiting for a rank that cannot report.
srun --kill-on-bad-exit=1 XXXcommandXXX

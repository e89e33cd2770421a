# Source this (as root, no systemd needed) to start a one-node SLURM cluster on 127.0.0.1:
# munge, slurmctld and slurmd, with SLURM_CONF exported for everything started afterwards.
# Steps as in ../shared/reference/datasets.md §4. Needs slurm-wlm, slurmctld, slurmd,
# slurm-client and munge installed (Debian packages).
BENCH_SLURM_STATE=${BENCH_SLURM_STATE:-/tmp/bench-slurm}
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
# A socket left by an earlier boot is not a running munged: ask munge itself.
munge -n > /dev/null 2>&1 || su -s /bin/sh munge -c "/usr/sbin/munged --force"
mkdir -p "$BENCH_SLURM_STATE"/spool/ctld "$BENCH_SLURM_STATE"/spool/d "$BENCH_SLURM_STATE"/log
chown slurm "$BENCH_SLURM_STATE"/spool/ctld
host=$(hostname -s)
cpus=$(nproc)
memory=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
cat > "$BENCH_SLURM_STATE"/slurm.conf <<CONF
ClusterName=local
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=${BENCH_SLURM_STATE}/spool/ctld
SlurmdSpoolDir=${BENCH_SLURM_STATE}/spool/d
SlurmctldPidFile=${BENCH_SLURM_STATE}/slurmctld.pid
SlurmdPidFile=${BENCH_SLURM_STATE}/slurmd.pid
SlurmctldLogFile=${BENCH_SLURM_STATE}/log/slurmctld.log
SlurmdLogFile=${BENCH_SLURM_STATE}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${memory} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$BENCH_SLURM_STATE"/slurm.conf
slurmctld -D > "$BENCH_SLURM_STATE"/log/slurmctld.out 2>&1 &
slurmd -D > "$BENCH_SLURM_STATE"/log/slurmd.out 2>&1 &
for _ in $(seq 30); do
  sinfo -h -o %T 2>/dev/null | grep -q idle && break
  sleep 1
done
sinfo || echo "SLURM did not come up (see $BENCH_SLURM_STATE/log): tests/test_slurm.py will skip"

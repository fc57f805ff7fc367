"""A real one-node SLURM cluster on this machine for tests: munge, slurmctld and slurmd on localhost.

Needs Debian's `slurm-wlm` and `munge`; as root with apt-get they are installed on first use. The
daemons run in the foreground as child processes of the test session and are stopped by pid.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")


def unavailable() -> str | None:
    """Why no cluster can be started here (None: it can), installing the packages when possible."""
    if shutil.which("slurmctld") and shutil.which("munged"):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "SLURM (slurm-wlm, munge) is not installed, and installing it needs root and apt-get"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", *PACKAGES]):
        result = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            return f"could not install SLURM with {' '.join(cmd)}: {result.stderr[-500:]}"
    return None


SYSTEM_CONF = Path("/etc/slurm/slurm.conf")


@dataclass
class Cluster:
    root: Path
    conf: Path
    processes: list[subprocess.Popen] = field(default_factory=list)
    linked: bool = False  # whether SYSTEM_CONF is our link (job steps read it: SLURM_CONF does not reach them)

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, SLURM_CONF=str(self.conf))

    def stop(self) -> None:
        if self.linked:
            SYSTEM_CONF.unlink(missing_ok=True)
        for p in reversed(self.processes):
            p.terminate()
        for p in reversed(self.processes):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def _munge(root: Path) -> list[subprocess.Popen]:
    """munged with its own key and socket under ``root`` (a system munged, if any, is left alone)."""
    key, sock = root / "munge.key", root / "munge.socket"
    subprocess.run(["mungekey", "--create", "--keyfile", str(key)], check=True, capture_output=True)
    os.chmod(key, 0o400)
    daemon = subprocess.Popen(
        [
            "munged",
            "--foreground",
            "--force",
            f"--key-file={key}",
            f"--socket={sock}",
            f"--pid-file={root / 'munged.pid'}",
            f"--log-file={root / 'munged.log'}",
            f"--seed-file={root / 'munged.seed'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    _wait(lambda: sock.exists(), "munged", root / "munged.log")
    return [daemon]


def _wait(ready, what: str, log: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            text = log.read_text() if log.exists() else "(no log)"
            raise RuntimeError(f"{what} did not come up in {seconds} s:\n{text[-2000:]}")
        time.sleep(0.5)


def start(root: Path) -> Cluster:
    """Controller and node daemon for this host with its CPUs and memory, one partition, no accounting."""
    root.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    cpus = os.cpu_count() or 1
    memory_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.9)
    for folder in ("state", "spool"):
        (root / folder).mkdir(exist_ok=True)
    conf = root / "slurm.conf"
    conf.write_text(f"""ClusterName=sattest
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root / "munge.socket"}
CredType=cred/munge
StateSaveLocation={root / "state"}
SlurmdSpoolDir={root / "spool"}
SlurmctldPidFile={root / "slurmctld.pid"}
SlurmdPidFile={root / "slurmd.pid"}
SlurmctldLogFile={root / "slurmctld.log"}
SlurmdLogFile={root / "slurmd.log"}
SlurmctldPort=16817
SlurmdPort=16818
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=3600
SchedulerType=sched/backfill
NodeName={host} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    cluster = Cluster(root, conf)
    if SYSTEM_CONF.is_symlink() and not (SYSTEM_CONF.resolve().parent / "munge.socket").exists():
        SYSTEM_CONF.unlink()  # the link of an earlier test session killed before it could remove it
    if not SYSTEM_CONF.exists():
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SYSTEM_CONF.symlink_to(conf)
        cluster.linked = True
    try:
        cluster.processes += _munge(root)
        env = cluster.env
        for daemon in ("slurmctld", "slurmd"):
            cluster.processes.append(
                subprocess.Popen(
                    [daemon, "-D", "-f", str(conf)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
                )
            )

        def idle() -> bool:
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True).stdout
            return out.strip() in ("idle", "mix")

        _wait(idle, "slurmd (node idle in sinfo)", root / "slurmd.log")
    except BaseException:
        cluster.stop()
        raise
    return cluster

"""A one-node SLURM cluster with accounting, for the tests: Debian's slurmctld + slurmd + munge, and slurmdbd on
MariaDB (submitit needs accounting -- sacct -- to see a job that was cancelled or died). SLURM's daemons bind every
interface and have no option against it, so the cluster lives in a private network namespace made for it (a
process in `unshare --net`, loopback up); every command that talks to it runs there too (`cluster.run`, or
`cluster.command(...)` for a Popen). The files (configs, state, logs, the jobs' outputs) are in a temp dir.

    with SlurmCluster(tmp_path) as cluster:
        cluster.run(["sbatch", "--wrap", "hostname"])

`accounting=False`: no slurmdbd (sacct answers "accounting storage is disabled"), as on many small clusters.
`SlurmCluster.unavailable()` says why it cannot start here (not root, no unshare, packages missing), for a skip.
Install: apt-get install slurmctld slurmd slurm-client munge slurmdbd mariadb-server iproute2 (.ci/run does).
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

PROGRAMS = ["slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd", "mariadb-install-db", "sbatch", "sacct",
            "sacctmgr", "scontrol", "unshare", "nsenter", "ip"]


UNFINISHED = {"PENDING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED", "REQUEUE_HOLD",
              "REQUEUE_FED", "SIGNALING", "STAGE_OUT"}


class SlurmCluster:
    def __init__(self, root: Path, cpus: int = 2, memory_mb: int = 16000, accounting: bool = True):
        self.root, self.cpus, self.memory_mb, self.accounting = Path(root), cpus, memory_mb, accounting
        self.netns = None  # the process holding the network namespace
        self.daemons: list[subprocess.Popen] = []

    @staticmethod
    def unavailable() -> str | None:
        if os.geteuid() != 0:
            return "the SLURM test cluster needs root (its daemons run as root in a private network namespace)"
        missing = [p for p in PROGRAMS if shutil.which(p) is None]
        if missing:
            return (f"SLURM is not installed ({', '.join(missing)} missing): apt-get install slurmctld slurmd "
                    f"slurm-client munge slurmdbd mariadb-server iproute2")
        probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True)
        if probe.returncode != 0:
            return f"cannot make a private network namespace here (unshare --net: {probe.stderr.strip()})"
        return None

    # --- running things inside the namespace -------------------------------------------------------------
    @property
    def env(self) -> dict:
        return {**os.environ, "SLURM_CONF": str(self.root / "slurm.conf")}

    def command(self, argv: list[str]) -> list[str]:
        """`argv` as a command that runs inside the cluster's network namespace."""
        return ["nsenter", "-t", str(self.netns.pid), "-n", "-m", *argv]

    def run(self, argv: list[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(argv), env=kwargs.pop("env", self.env), check=check, capture_output=True,
                              text=True, **kwargs)

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.command(argv), env=kwargs.pop("env", self.env), **kwargs)

    def listening_outside(self) -> list[str]:
        """Sockets listening on this machine's own network (outside the namespace) that belong to the cluster's
        daemons: none, by construction."""
        out = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout if shutil.which("ss") else ""
        names = ("slurmctld", "slurmd", "slurmdbd", "mariadbd")
        return [line for line in out.splitlines() if any(f'"{n}"' in line for n in names)]

    # --- start / stop --------------------------------------------------------------------------------------
    def __enter__(self) -> "SlurmCluster":
        self.root.mkdir(parents=True, exist_ok=True)
        # slurmd's sockets live in its spool dir, and a unix socket's path has at most 108 bytes: a short one
        self.spool = Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp"))
        for sub in ("state", "log", "mysql", "run"):
            (self.root / sub).mkdir(exist_ok=True)
        # Loopback, with a second, private address: getaddrinfo(AI_ADDRCONFIG), which the daemons use to listen,
        # finds no address family among loopback addresses alone. Both exist only in the namespace. A mount namespace
        # too, for munge's socket at the path every SLURM client looks for it (/run/munge) without touching the
        # machine's own.
        munge_run = self.root / "run" / "munge"
        munge_run.mkdir(parents=True, exist_ok=True)
        self.netns = subprocess.Popen(["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c",
                                       f"mkdir -p /run/munge && mount --bind {munge_run} /run/munge && ip link set lo "
                                       f"up && ip addr add 10.255.0.1/32 dev lo && exec sleep infinity"],
                                      start_new_session=True)
        deadline = time.time() + 10
        while "10.255.0.1" not in subprocess.run(["nsenter", "-t", str(self.netns.pid), "-n", "ip", "addr", "show",
                                                  "lo"], capture_output=True, text=True).stdout:
            if time.time() > deadline:
                raise RuntimeError("the network namespace's loopback did not come up")
            time.sleep(0.05)
        try:
            self.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def start(self) -> None:
        r = self.root
        key = r / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.daemon(["munged", "--foreground", "--force", f"--key-file={key}", "--socket=/run/munge/munge.socket.2",
                     f"--pid-file={r / 'run/munged.pid'}", f"--log-file={r / 'log/munged.log'}",
                     f"--seed-file={r / 'run/munge.seed'}"])
        self.wait_for(r / "run/munge/munge.socket.2", "munged")
        storage = "slurmdbd\nAccountingStorageHost=localhost" if self.accounting else "none"
        (r / "slurm.conf").write_text(
            f"ClusterName=sftsweep\nSlurmctldHost=localhost(127.0.0.1)\nSlurmUser=root\nSlurmdUser=root\n"
            f"AuthType=auth/munge\nStateSaveLocation={r / 'state'}\nSlurmdSpoolDir={self.spool}\n"
            f"SlurmctldPidFile={r / 'run/slurmctld.pid'}\nSlurmdPidFile={r / 'run/slurmd.pid'}\n"
            f"SlurmctldLogFile={r / 'log/slurmctld.log'}\nSlurmdLogFile={r / 'log/slurmd.log'}\n"
            "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nSelectType=select/cons_tres\n"
            "SelectTypeParameters=CR_CPU\nReturnToService=2\nMpiDefault=none\nSchedulerType=sched/backfill\n"
            f"AccountingStorageType=accounting_storage/{storage}\n"
            "JobAcctGatherType=jobacct_gather/none\nJobCompType=jobcomp/none\nJobRequeue=1\nKillWait=30\n"
            "MinJobAge=600\nSlurmctldTimeout=30\nSlurmdTimeout=30\nInactiveLimit=0\n"
            f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN\n"
            "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO\n")
        if self.accounting:  # (slurmdbd and sacctmgr read slurm.conf too)
            self.start_accounting()
        self.daemon(["slurmctld", "-D", "-f", str(r / "slurm.conf")])
        self.daemon(["slurmd", "-D", "-N", "localhost", "-f", str(r / "slurm.conf")])
        self.until(lambda: "idle" in self.run(["sinfo", "-h", "-o", "%t"], check=False).stdout, "slurmd (node idle)")

    def start_accounting(self) -> None:
        """MariaDB (no passwords: it listens in the namespace only) and slurmdbd on it, the cluster registered."""
        r = self.root
        subprocess.run(["mariadb-install-db", f"--datadir={r / 'mysql'}", "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db"], check=True, capture_output=True)
        self.daemon(["mariadbd", f"--datadir={r / 'mysql'}", f"--socket={self.spool / 'mysql.sock'}", "--port=3306",
                     "--bind-address=127.0.0.1", "--user=root", "--skip-grant-tables", "--skip-log-bin",
                     f"--pid-file={r / 'run/mariadb.pid'}", f"--log-error={r / 'log/mariadb.log'}"])
        self.wait_for(self.spool / "mysql.sock", "mariadbd")
        dbd = r / "slurmdbd.conf"  # slurmdbd reads it beside $SLURM_CONF
        dbd.write_text(f"DbdHost=localhost\nDbdAddr=127.0.0.1\nSlurmUser=root\nAuthType=auth/munge\n"
                       f"StorageType=accounting_storage/mysql\nStorageHost=127.0.0.1\nStoragePort=3306\n"
                       f"StorageUser=root\nStorageLoc=slurm_acct_db\nLogFile={r / 'log/slurmdbd.log'}\n"
                       f"PidFile={r / 'run/slurmdbd.pid'}\n")
        dbd.chmod(0o600)
        self.daemon(["slurmdbd", "-D"])
        self.until(lambda: self.run(["sacctmgr", "-n", "list", "cluster"], check=False).returncode == 0, "slurmdbd")
        self.run(["sacctmgr", "-i", "add", "cluster", "sftsweep"], check=False)

    def daemon(self, argv: list[str]) -> None:
        log = (self.root / "log" / f"{argv[0]}.out").open("w")
        self.daemons.append(self.popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def wait_for(self, path: Path, what: str) -> None:
        self.until(path.exists, what)

    def until(self, ready, what: str, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while not ready():
            dead = [d for d in self.daemons if d.poll() is not None]
            if dead or time.time() > deadline:
                logs = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in (self.root / "log").glob("*"))
                raise RuntimeError(f"the SLURM test cluster did not start ({what}):\n{logs}")
            time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        for process in reversed(self.daemons):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.daemons:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        if self.netns is not None and self.netns.poll() is None:
            # What the daemons leave behind (a job step's slurmstepd outlives slurmd): every process in the namespace
            namespace = os.readlink(f"/proc/{self.netns.pid}/ns/net")
            for pid in (int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != self.netns.pid):
                try:
                    if os.readlink(f"/proc/{pid}/ns/net") == namespace:
                        os.kill(pid, signal.SIGKILL)
                except OSError:  # gone already
                    pass
            os.killpg(self.netns.pid, signal.SIGKILL)
            self.netns.wait()
        shutil.rmtree(getattr(self, "spool", ""), ignore_errors=True)

    # --- the cluster's view of jobs ---------------------------------------------------------------------------
    def state(self, job: str) -> str:
        """A job's state now, as the controller sees it (PENDING, RUNNING, COMPLETING, ...)."""
        out = self.run(["scontrol", "show", "job", "-o", job]).stdout
        return next(field.split("=", 1)[1] for field in out.split() if field.startswith("JobState="))

    def jobs(self) -> list[dict]:
        """Every job accounting knows: id, name, state, exit code."""
        out = self.run(["sacct", "-X", "-n", "-P", "-a", "-o", "JobIDRaw,JobName,State,ExitCode"]).stdout
        return [dict(zip(("id", "name", "state", "exit"), line.split("|"))) for line in out.splitlines()
                if line.strip()]

    def ended_jobs(self, ids, timeout: float = 120) -> dict[str, dict]:
        """{id: job} of every job accounting knows, once each of `ids` is recorded in a final state: slurmdbd
        records a job's end some seconds after its processes exit (seen: RUNNING 12 s after), more under load."""
        deadline = time.time() + timeout
        while True:
            jobs = {job["id"]: job for job in self.jobs()}
            if all(i in jobs and jobs[i]["state"].split()[0] not in UNFINISHED for i in ids):
                return jobs
            assert time.time() < deadline, f"accounting has not recorded the end of jobs {ids}: {jobs}"
            time.sleep(0.5)

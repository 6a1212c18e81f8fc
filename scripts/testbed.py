#!/usr/bin/env python3
"""Real SSH + Slurm testbed on 127.0.0.1 for sl_pipelines' integration tests (stdlib only, run as root).

Subcommands (see ``scripts/testbed.sh``):

``install``
    Installs the missing Debian packages (openssh-server, openssh-client, munge, slurmctld, slurmd,
    slurm-client, slurmdbd, mariadb-server, python3-venv) with ``apt-get install --no-install-recommends``.
``start [--no-accounting]``
    Idempotent. Installs what is missing, writes configs, creates the test users, builds the server-side
    Python environment (reinstalls ``sl_pipelines`` only when ``src/`` or ``pyproject.toml`` changed) and
    starts what is not running: sshd, munged, MariaDB + slurmdbd, and two single-host Slurm clusters:

    * ``slacct`` (info key ``acct``): accounting through slurmdbd, ``sacct`` works; SSH user ``sltest``.
      It enforces association limits (``AccountingStorageEnforce=associations,limits``): ``start`` puts
      every test user into the account ``sl_lab`` and clears any submit limit a killed test left.
    * ``slnoacct`` (info key ``noacct``): no accounting, ``sacct`` fails; SSH user ``sltest2``.
    * info key ``chatty``: the cluster ``slnoacct`` again, as SSH user ``sltest3``, whose ``~/.bashrc``
      prints a banner before Debian's "not interactive: return" line (so every remote command's output
      starts with it) and whose ``~/.profile`` prints too; its own storage and working roots.

    sshd gives each user the right ``SLURM_CONF`` (``Match User`` + ``SetEnv``); jobs inherit it.
    ``--no-accounting`` (or ``SL_TESTBED_NO_ACCOUNTING=1`` in the environment, which the pytest fixture
    passes on) skips MariaDB, slurmdbd and the ``slacct`` cluster: the info file then lists only ``noacct``
    and tests that need ``acct`` are skipped. It does not stop those daemons if they already run.
    Returns once both clusters report their node up (idle, or busy with jobs: ``start`` also brings back
    a daemon that was stopped while jobs run, without touching those that run) and both users can run
    ``sinfo`` over SSH.
``stop [DAEMON ...]``
    Ends only the daemons whose pid files this script wrote (only the named ones when given: ``sshd``,
    ``munged``, ``mariadbd``, ``slurmdbd``, ``slurmctld-CLUSTER``, ``slurmd-CLUSTER``), and waits for them
    to exit. ``stop slurmctld-slnoacct`` then ``start`` is an outage of one controller: running jobs go on.
``status``
    One line per daemon; exit code 0 when every daemon of the last ``start`` runs.
``env``
    Prints the info file's path, then its JSON content.
``load-others N [--cluster acct|noacct|all]``
    Makes the held jobs of another user (``sltest4``, created when missing, no login) number N on each
    running cluster: other people's jobs in slurmctld, for benchmarks (``0`` cancels them). See
    ``scripts/testbed_others.py``.

Each cluster's node advertises 64 CPUs and 64 GiB (``NODE_CPUS``; the machine has 2 CPUs), and
slurmctld holds up to 50,000 jobs (``MaxJobCount``) with arrays of up to 10,000 tasks (``MaxArraySize``
10001); ``MinJobAge`` stays Slurm's 300 s.

Everything listens on 127.0.0.1 only, except slurmdbd (port 22819, munge-authenticated): Slurm 22.05's
slurmdbd has no option to bind a single address.

All state lives in ``$SL_TESTBED_DIR`` (default ``/var/tmp/sl-testbed``). Ports are
``$SL_TESTBED_PORT_BASE`` (default 22000) plus a fixed offset per daemon (see ``PORTS``); sshd listens on
``127.0.0.1:${SL_TESTBED_SSH_PORT:-base+22}``. Several testbeds can run side by side on one machine
(another state folder and port base each): they share the test users, whose password lives in
``$SL_TESTBED_PASSWORD_FILE`` (default ``<state>/password``; point every instance at the same file) and
whose ``authorized_keys`` collects every instance's client key.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import grp
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("SL_TESTBED_DIR", "/var/tmp/sl-testbed"))
HOST = "127.0.0.1"
PORT_BASE = int(os.environ.get("SL_TESTBED_PORT_BASE", "22000"))
SSH_PORT = int(os.environ.get("SL_TESTBED_SSH_PORT", str(PORT_BASE + 22)))
PORTS = {
    "mariadb": PORT_BASE + 306,
    "slurmdbd": PORT_BASE + 819,
    "slacct_ctld": PORT_BASE + 817,
    "slacct_d": PORT_BASE + 818,
    "slnoacct_ctld": PORT_BASE + 827,
    "slnoacct_d": PORT_BASE + 828,
}
PACKAGES = [
    "openssh-server",
    "openssh-client",
    "munge",
    "slurmctld",
    "slurmd",
    "slurm-client",
    "slurmdbd",
    "mariadb-server",
    "python3-venv",
    "strace",
]
SYSTEM_PYTHON = "/usr/bin/python3"
GROUP = "sltest"
# cluster key in the info file -> (Slurm cluster name, SSH user, accounting, first job id)
CLUSTERS = {
    "acct": ("slacct", "sltest", True, 1000),
    "noacct": ("slnoacct", "sltest2", False, 500000),
}
# A third user, on the cluster without accounting, whose login scripts print (info key "chatty"): as on
# many HPC sites, ~/.bashrc prints a banner BEFORE Debian's "not interactive: return" line, so the banner
# lands in every remote command's output; ~/.profile prints too.
CHATTY_KEY, CHATTY_CLUSTER, CHATTY_USER = "chatty", "noacct", "sltest3"
OTHER_USER = "sltest4"  # load-others' user (scripts/testbed_others.py)
CLUSTER_USERS = (*(user for _, user, _, _ in CLUSTERS.values()), CHATTY_USER, OTHER_USER)
CHATTY_BANNER = "Welcome to the cluster"
# What each cluster's one node advertises (SlurmdParameters=config_overrides: the machine has 2 CPUs). The
# demo worker's jobs are tiny: 64 slots let 7 behavior pipelines (49 jobs) run at once, so thousands of
# short jobs drain in minutes, limited by the real CPUs rather than by Slurm's slots.
NODE_CPUS, NODE_MEMORY_MB = 64, 65536
MAX_JOB_COUNT, MAX_ARRAY_SIZE = 50000, 10001

RUN = STATE / "run"
LOGS = STATE / "log"
SSH_DIR = STATE / "ssh"
MUNGE_DIR = STATE / "munge"
MUNGE_SOCKET = MUNGE_DIR / "munge.socket.2"
DB_DIR = STATE / "mariadb"
SLURM_DIR = STATE / "slurm"
SERVER_ROOT = STATE / "server"
SERVER_ENV = STATE / "server-env"
INFO = STATE / "testbed.json"
CLIENT_KEY = STATE / "client_key"
KNOWN_HOSTS = STATE / "known_hosts"
PASSWORD_FILE = Path(os.environ.get("SL_TESTBED_PASSWORD_FILE", str(STATE / "password")))

T0 = time.monotonic()


def log(message: str) -> None:
    print(f"testbed [{time.monotonic() - T0:6.2f}s] {message}", flush=True)


def die(message: str) -> None:
    print(f"testbed: ERROR: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, **kwargs)  # type: ignore[call-overload]


def run_quiet(cmd: list[str]) -> None:
    """Runs cmd, showing its output only when it fails."""
    result = subprocess.run(cmd, text=True, capture_output=True, check=False)
    if result.returncode != 0:
        print(result.stdout + result.stderr, file=sys.stderr)
        die(f"command failed ({result.returncode}): {' '.join(cmd)}")


def write_if_changed(path: Path, content: str, mode: int = 0o644) -> bool:
    """Writes atomically; returns True when the content changed."""
    if path.exists() and path.read_text() == content:
        os.chmod(path, mode)
        return False
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(content)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return True


def mkdir(path: Path, mode: int = 0o755, owner: str | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    if owner is not None:
        pw = pwd.getpwnam(owner)
        os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


# ----------------------------------------------------------------------------------------------- install


def missing_packages() -> list[str]:
    missing = []
    for package in PACKAGES:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
        )
        if result.returncode != 0 or "install ok installed" not in result.stdout:
            missing.append(package)
    return missing


def cmd_install() -> None:
    missing = missing_packages()
    if not missing:
        log("packages: all installed")
        return
    log(f"packages: installing {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Keep package scripts from starting system daemons (munge, mariadb, ...) on their default ports.
    policy = Path("/usr/sbin/policy-rc.d")
    created_policy = not policy.exists()
    if created_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL)
        run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
            env=env,
            stdout=subprocess.DEVNULL,
        )
    finally:
        if created_policy:
            policy.unlink()
    still = missing_packages()
    if still:
        die(f"packages still missing after apt-get install: {still}")
    log("packages: installed")


# ------------------------------------------------------------------------------------------- processes


def pid_file(name: str) -> Path:
    """The pid file this script writes for daemon `name` (the only one stop/status trust)."""
    return RUN / f"{name}.pid"


def own_pid_file(name: str) -> Path:
    """Where daemon `name` writes its own pid file (kept apart: daemons truncate and rewrite theirs)."""
    return RUN / f"{name}.daemon.pid"


def pid_alive(pid: int, exe_hint: str) -> bool:
    """True when pid runs (a zombie counts as dead) and its command line mentions exe_hint."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X") and exe_hint in cmdline


def read_pid(name: str) -> int | None:
    try:
        return int(pid_file(name).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def daemon_pid(name: str) -> int | None:
    """The pid of the running daemon `name` started by this script, or None."""
    pid = read_pid(name)
    if pid is not None and pid_alive(pid, DAEMON_EXE[name]):
        return pid
    return None


def spawn(name: str, cmd: list[str], env: dict[str, str] | None = None, user: str | None = None) -> int:
    """Starts a daemon in the foreground of its own session, detached from this script; records its pid."""
    logfile = LOGS / f"{name}.out"
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=env if env is not None else base_env(),
            user=user,
            group=user,
            extra_groups=[] if user else None,
            cwd="/",
        )
    write_if_changed(pid_file(name), f"{proc.pid}\n")
    return proc.pid


def base_env() -> dict[str, str]:
    return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def wait_for(what: str, check: object, timeout: float, name: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if check():  # type: ignore[operator]
            return
        if name is not None and daemon_pid(name) is None:
            # Seen twice under load: a daemon just started (and running fine afterwards) looked gone for
            # one look. Only a daemon that still looks gone a second later has exited.
            time.sleep(1.0)
            if check():  # type: ignore[operator]
                return
            if daemon_pid(name) is None:
                die(f"{name} exited while waiting for {what}; see {LOGS / (name + '.out')} and {LOGS}")
        if time.monotonic() > deadline:
            die(f"timed out after {timeout:.0f}s waiting for {what}; see logs in {LOGS}")
        time.sleep(0.1)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def terminate(name: str, timeout: float = 20.0) -> bool:
    pid = daemon_pid(name)
    if pid is None:
        pid_file(name).unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid, DAEMON_EXE[name]):
        if time.monotonic() > deadline:
            log(f"{name} (pid {pid}) ignored SIGTERM for {timeout:.0f}s: SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
        time.sleep(0.05)
    pid_file(name).unlink(missing_ok=True)
    return True


DAEMON_EXE = {
    "sshd": "/usr/sbin/sshd",
    "munged": "/usr/sbin/munged",
    "mariadbd": "/usr/sbin/mariadbd",
    "slurmdbd": "/usr/sbin/slurmdbd",
    "slurmctld-slacct": "/usr/sbin/slurmctld",
    "slurmd-slacct": "/usr/sbin/slurmd",
    "slurmctld-slnoacct": "/usr/sbin/slurmctld",
    "slurmd-slnoacct": "/usr/sbin/slurmd",
}
# Start order; stop goes in reverse.
ALL_DAEMONS = list(DAEMON_EXE)
ACCOUNTING_DAEMONS = {"mariadbd", "slurmdbd", "slurmctld-slacct", "slurmd-slacct"}


def expected_daemons(accounting: bool) -> list[str]:
    return [d for d in ALL_DAEMONS if accounting or d not in ACCOUNTING_DAEMONS]


@contextlib.contextmanager
def state_lock() -> Iterator[None]:
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# ------------------------------------------------------------------------------------------- users


def login_users() -> dict[str, str]:
    """Every SSH test user and the Slurm cluster its sessions see."""
    users = {user: name for name, user, _, _ in CLUSTERS.values()}
    users[CHATTY_USER] = CLUSTERS[CHATTY_CLUSTER][0]
    return users


def chatty_login_scripts() -> dict[str, str]:
    """~/.bashrc and ~/.profile of the chatty user: Debian's, with a banner printed first."""
    header = (
        "# Written by scripts/testbed.py: a site banner printed before anything else, as on many HPC sites.\n"
    )
    scripts = {}
    for name, banner in (
        (".bashrc", f"{CHATTY_BANNER}\nQuota: 12% of /home used"),
        (".profile", "Site profile"),
    ):
        skel = Path("/etc/skel") / name
        rest = skel.read_text() if skel.exists() else "case $- in\n    *i*) ;;\n      *) return;;\nesac\n"
        echo = "".join(f"echo {line!r}\n" for line in banner.splitlines())
        scripts[name] = header + echo + rest
    return scripts


def ensure_users(password: str) -> None:
    try:
        grp.getgrnam(GROUP)
    except KeyError:
        run(["groupadd", GROUP])
    for user in login_users():
        try:
            pwd.getpwnam(user)
        except KeyError:
            log(f"users: creating {user}")
            run(["useradd", "-m", "-d", f"/home/{user}", "-s", "/bin/bash", "-g", GROUP, user])
    shadow = Path("/etc/shadow").read_text()
    # chpasswd only when needed (a fresh or locked account, or another password): a marker file records
    # a hash of the password and user names last set.
    marker = STATE / ".password-set"
    wanted = hashlib.sha256((password + ",".join(sorted(login_users()))).encode())
    locked = any(
        line.split(":")[1].startswith(("!", "*"))
        for line in shadow.splitlines()
        if line.split(":")[0] in login_users()
    )
    if locked or not marker.exists() or marker.read_text() != wanted.hexdigest():
        lines = "".join(f"{user}:{password}\n" for user in login_users())
        run(["chpasswd"], input=lines)
        write_if_changed(marker, wanted.hexdigest(), 0o600)
    pub = (STATE / "client_key.pub").read_text()
    chatty = pwd.getpwnam(CHATTY_USER)
    for name, text in chatty_login_scripts().items():
        write_if_changed(Path(chatty.pw_dir) / name, text)
        os.chown(Path(chatty.pw_dir) / name, chatty.pw_uid, chatty.pw_gid)
    for user in login_users():
        pw = pwd.getpwnam(user)
        ssh = Path(pw.pw_dir) / ".ssh"
        ssh.mkdir(mode=0o700, exist_ok=True)
        os.chown(ssh, pw.pw_uid, pw.pw_gid)
        keys = ssh / "authorized_keys"
        known = keys.read_text().splitlines(keepends=True) if keys.exists() else []
        if pub.strip() not in (line.strip() for line in known):  # other testbed instances keep theirs
            write_if_changed(keys, "".join(known) + pub, 0o600)
        os.chown(keys, pw.pw_uid, pw.pw_gid)


# ------------------------------------------------------------------------------------------- configs


def sshd_config() -> str:
    lines = [
        "# Written by scripts/testbed.py",
        f"Port {SSH_PORT}",
        f"ListenAddress {HOST}",
        f"HostKey {SSH_DIR / 'ssh_host_ed25519_key'}",
        f"PidFile {own_pid_file('sshd')}",
        "UsePAM no",
        "PubkeyAuthentication yes",
        "PasswordAuthentication yes",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin no",
        f"AllowUsers {' '.join(login_users())}",
        "AuthorizedKeysFile .ssh/authorized_keys",
        "PrintMotd no",
        "X11Forwarding no",
        "MaxStartups 100:30:200",
        "MaxSessions 100",
        "LogLevel INFO",
        "Subsystem sftp internal-sftp",
    ]
    for user, name in login_users().items():
        lines += [f"Match User {user}", f"    SetEnv SLURM_CONF={SLURM_DIR / name / 'slurm.conf'}"]
    return "\n".join(lines) + "\n"


CGROUP_CONF = """# Written by scripts/testbed.py: a job may use the memory it asked for, no swap.

CgroupPlugin=cgroup/v1
CgroupAutomount=no
CgroupMountpoint=/sys/fs/cgroup
ConstrainRAMSpace=yes
ConstrainSwapSpace=yes
AllowedSwapSpace=0
"""


def memory_enforceable() -> bool:
    """True where Slurm's task/cgroup can limit a job's memory: the cgroup v1 memory controller."""
    return Path("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists()


def slurm_conf(name: str, accounting: bool, first_job_id: int) -> str:
    d = SLURM_DIR / name
    lines = [
        "# Written by scripts/testbed.py",
        f"ClusterName={name}",
        "SlurmctldHost=localhost(127.0.0.1)",
        f"SlurmctldPort={PORTS[name + '_ctld']}",
        f"SlurmdPort={PORTS[name + '_d']}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={MUNGE_SOCKET}",
        f"StateSaveLocation={d / 'state'}",
        f"SlurmdSpoolDir={d / 'spool'}",
        f"SlurmctldPidFile={own_pid_file('slurmctld-' + name)}",
        f"SlurmdPidFile={own_pid_file('slurmd-' + name)}",
        f"SlurmctldLogFile={LOGS / ('slurmctld-' + name + '.log')}",
        f"SlurmdLogFile={LOGS / ('slurmd-' + name + '.log')}",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "ProctrackType=proctrack/linuxproc",
        # Memory is enforced as on a real site (cgroup.conf: ConstrainRAMSpace): a job that uses more
        # than it asked for is killed by the kernel and ends OUT_OF_MEMORY. These machines have cgroup v1
        # with the memory controller; proctrack/cgroup does not work here, task/cgroup does.
        "TaskPlugin=task/cgroup" if memory_enforceable() else "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU_Memory",
        "DefMemPerCPU=256",
        "SlurmdParameters=config_overrides",
        "ReturnToService=2",
        "SchedulerParameters=batch_sched_delay=0",
        "DependencyParameters=kill_invalid_depend",
        # Slurm's default. With 10 s, a munge outage of a minute marks the node DOWN, Slurm requeues the
        # jobs that finished meanwhile and drains the node ("Duplicate jobid") when it relaunches them.
        "SlurmdTimeout=300",
        "MailProg=/bin/true",
        "MpiDefault=none",
        # Bind to 127.0.0.1 (the controller's and the node's address) instead of every interface.
        "CommunicationParameters=NoCtldInAddrAny,NoInAddrAny",
        f"FirstJobId={first_job_id}",
        "JobCompType=jobcomp/none",
        # Room for a year of a lab's sessions at once (1,000 seven-job pipelines, another user's 1,000 held
        # jobs, and the finished ones slurmctld keeps for MinJobAge); MaxArraySize lets one array hold 7,000
        # tasks. MinJobAge stays Slurm's 300 s: without accounting, finished jobs are looked up there.
        f"MaxJobCount={MAX_JOB_COUNT}",
        f"MaxArraySize={MAX_ARRAY_SIZE}",
    ]
    if accounting:
        lines += [
            "AccountingStorageType=accounting_storage/slurmdbd",
            "AccountingStorageHost=localhost",
            f"AccountingStoragePort={PORTS['slurmdbd']}",
            f"AccountingStoragePass={MUNGE_SOCKET}",
            "JobAcctGatherType=jobacct_gather/linux",
            # Sample each job's memory every second (Slurm's default, 30 s, leaves a job of a few seconds
            # without any MaxRSS): the usage tests compare sacct's peak with what the job allocated.
            "JobAcctGatherFrequency=task=1",
            # Limits as on a real site: every user needs an association (``start`` adds the test users to
            # the account sl_lab), and a test can set a submit limit on one (MaxSubmitJobs).
            "AccountingStorageEnforce=associations,limits",
        ]
    else:
        lines += ["AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none"]
    lines += [
        f"NodeName={name}-n1 NodeAddr=127.0.0.1 CPUs={NODE_CPUS} RealMemory={NODE_MEMORY_MB} State=UNKNOWN",
        "PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
    ]
    return "\n".join(lines) + "\n"


def slurmdbd_conf() -> str:
    return (
        "\n".join(
            [
                "# Written by scripts/testbed.py",
                "AuthType=auth/munge",
                f"AuthInfo=socket={MUNGE_SOCKET}",
                "DbdHost=localhost",
                "DbdAddr=127.0.0.1",
                f"DbdPort={PORTS['slurmdbd']}",
                "SlurmUser=root",
                "DebugLevel=info",
                f"LogFile={LOGS / 'slurmdbd.log'}",
                f"PidFile={own_pid_file('slurmdbd')}",
                "StorageType=accounting_storage/mysql",
                "StorageHost=127.0.0.1",
                f"StoragePort={PORTS['mariadb']}",
                "StorageUser=root",
                "StorageLoc=slurm_acct_db",
            ]
        )
        + "\n"
    )


# ------------------------------------------------------------------------------------------- setup steps


def ensure_keys() -> tuple[str, str]:
    """Host and client keys; returns (known_hosts line, host key fingerprint)."""
    mkdir(SSH_DIR)
    host_key = SSH_DIR / "ssh_host_ed25519_key"
    if not host_key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sl-testbed-host", "-f", str(host_key)])
    if not CLIENT_KEY.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sl-testbed-client", "-f", str(CLIENT_KEY)])
    os.chmod(CLIENT_KEY, 0o600)
    os.chmod(host_key, 0o600)
    key_type, key_data = Path(f"{host_key}.pub").read_text().split()[:2]
    line = f"[{HOST}]:{SSH_PORT} {key_type} {key_data}\n"
    write_if_changed(KNOWN_HOSTS, line, 0o644)
    fingerprint = run(["ssh-keygen", "-l", "-E", "sha256", "-f", f"{host_key}.pub"], capture_output=True)
    return line, fingerprint.stdout.split()[1]


def ensure_password() -> str:
    if not PASSWORD_FILE.exists():
        write_if_changed(PASSWORD_FILE, secrets.token_urlsafe(18), 0o600)
    return PASSWORD_FILE.read_text().strip()


def ensure_munge() -> None:
    mkdir(MUNGE_DIR, 0o755, "munge")
    key = MUNGE_DIR / "munge.key"
    if not key.exists():
        system_key = Path("/etc/munge/munge.key")
        if system_key.exists():
            shutil.copyfile(system_key, key)
        else:
            run(["mungekey", "--create", "--keyfile", str(key)])
    pw = pwd.getpwnam("munge")
    os.chown(key, pw.pw_uid, pw.pw_gid)
    os.chmod(key, 0o600)
    mkdir(Path("/run/munge"), 0o755, "munge")


def source_hash() -> str:
    digest = hashlib.sha256()
    files = [REPO / "pyproject.toml", REPO / "README.md"]
    files += sorted(p for p in (REPO / "src").rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for path in files:
        if path.exists():
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def ensure_server_env() -> None:
    stamp = SERVER_ENV / ".sl-source-hash"
    wanted = source_hash()
    if stamp.exists() and stamp.read_text() == wanted and (SERVER_ENV / "bin" / "sl-worker").exists():
        log("server env: up to date")
        return
    pip = [str(SERVER_ENV / "bin" / "python"), "-m", "pip", "--quiet"]
    if not (SERVER_ENV / "bin" / "python").exists():
        log(f"server env: creating venv {SERVER_ENV} from {SYSTEM_PYTHON}")
        run([SYSTEM_PYTHON, "-m", "venv", str(SERVER_ENV)])
        run_quiet([*pip, "install", "--upgrade", "pip", "setuptools>=77", "wheel"])
    log("server env: installing sl_pipelines from the working tree")
    # Build from a copy so that the working tree gets no build/ or *.egg-info folders.
    with tempfile.TemporaryDirectory(dir=STATE, prefix="build-") as tmp:
        copy = Path(tmp) / "src-copy"
        copy.mkdir()
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
        shutil.copytree(REPO / "src", copy / "src", ignore=ignore)
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (REPO / name).exists():
                shutil.copy(REPO / name, copy / name)
        install = [*pip, "install", "--no-build-isolation"]
        run_quiet([*install, "--upgrade", "--force-reinstall", "--no-deps", str(copy)])
        deps_stamp = SERVER_ENV / ".sl-pyproject-hash"
        deps_wanted = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
        if not deps_stamp.exists() or deps_stamp.read_text() != deps_wanted:
            log("server env: installing dependencies")
            run_quiet([*install, str(copy)])
            deps_stamp.write_text(deps_wanted)
    for script in ("sl-tracker", "sl-worker"):
        if not (SERVER_ENV / "bin" / script).exists():
            die(
                f"server env: {script} missing from {SERVER_ENV / 'bin'} (console scripts in pyproject.toml?)"
            )
    run(["chmod", "-R", "a+rX", str(SERVER_ENV)])
    stamp.write_text(wanted)
    log("server env: installed")


def ensure_mariadb_datadir() -> None:
    datadir = DB_DIR / "data"
    if (datadir / "mysql").is_dir():
        return
    log("mariadb: initialising private datadir")
    mkdir(DB_DIR, 0o755)
    shutil.rmtree(datadir, ignore_errors=True)
    run(
        [
            "mariadb-install-db",
            "--no-defaults",
            "--user=root",
            f"--datadir={datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ],
        stdout=subprocess.DEVNULL,
    )


def ensure_layout(password: str) -> dict[str, bool]:
    """Folders and configs; returns which configs changed (to restart running daemons)."""
    mkdir(STATE)
    for folder in (RUN, LOGS, SLURM_DIR, SERVER_ROOT):
        mkdir(folder)
    changed = {}
    changed["sshd"] = write_if_changed(SSH_DIR / "sshd_config", sshd_config())
    for name, _, accounting, first_job_id in CLUSTERS.values():
        d = mkdir(SLURM_DIR / name)
        mkdir(d / "state", 0o700)
        mkdir(d / "spool", 0o755)
        changed[name] = write_if_changed(d / "slurm.conf", slurm_conf(name, accounting, first_job_id))
        changed[name] |= write_if_changed(d / "cgroup.conf", CGROUP_CONF)
    changed["slurmdbd"] = write_if_changed(SLURM_DIR / "slacct" / "slurmdbd.conf", slurmdbd_conf(), 0o600)
    ensure_users(password)
    for key, user in [*((key, c[1]) for key, c in CLUSTERS.items()), (CHATTY_KEY, CHATTY_USER)]:
        root = mkdir(SERVER_ROOT / key, 0o755, user)
        for sub in ("storage", "working"):
            mkdir(root / sub, 0o755, user)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    return changed


# ------------------------------------------------------------------------------------------- start


def slurm_env(name: str) -> dict[str, str]:
    return dict(base_env(), SLURM_CONF=str(SLURM_DIR / name / "slurm.conf"))


RESPONSIVE_NODE_STATES = ("idle", "mix", "alloc", "comp")
"""sinfo's short node states of a node that takes or runs jobs (a trailing ``*`` means not responding)."""


def node_responsive(name: str) -> bool:
    """True when the cluster's controller answers and its node is up: idle, or busy with jobs."""
    try:
        result = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N %t"],
            env=slurm_env(name),
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    words = result.stdout.split()
    return (
        result.returncode == 0
        and len(words) == 2
        and words[0] == f"{name}-n1"
        and (words[1] in RESPONSIVE_NODE_STATES)
    )


def sacct_works() -> bool:
    result = subprocess.run(
        ["sacct", "-n", "-X", "-S", "now-1minutes", "-o", "JobID"],
        env=slurm_env("slacct"),
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    return result.returncode == 0


LAB_ACCOUNT = "sl_lab"
"""The account every test user's association on ``slacct`` belongs to (the cluster enforces limits)."""


def ensure_associations() -> None:
    """Every test user that exists has an association with ``sl_lab`` on ``slacct``, with
    no submit limit left by an interrupted test; returns when slurmctld knows them all."""
    env = slurm_env("slacct")
    users = []
    for user in CLUSTER_USERS:
        with contextlib.suppress(KeyError):
            users.append(pwd.getpwnam(user).pw_name)
    sacctmgr = ["sacctmgr", "-i"]
    steps = (  # "Nothing new added" (exit 1) when they exist already: the check below is what counts
        ["add", "cluster", "slacct"],  # slurmctld registers it too, perhaps not yet on a fresh database
        ["add", "account", LAB_ACCOUNT, "cluster=slacct", "Description=sl_pipelines tests"],
        ["add", "user", ",".join(users), f"account={LAB_ACCOUNT}", "cluster=slacct"],
        ["modify", "user", "where", f"name={','.join(users)}", "cluster=slacct",
         "set", "MaxSubmitJobs=-1", "MaxJobs=-1"],
    )  # fmt: skip

    def known() -> bool:
        for step in steps:
            run_step = [*sacctmgr, *step]
            subprocess.run(run_step, env=env, capture_output=True, text=True, timeout=60, check=False)
        shown = subprocess.run(
            ["scontrol", "show", "assoc_mgr", "flags=assoc", f"users={','.join(users)}"],
            env=env, capture_output=True, text=True, timeout=15, check=False,
        )  # fmt: skip
        if all(f"UserName={user}(" in shown.stdout for user in users):
            return True
        time.sleep(0.5)
        return False

    wait_for(f"slacct: associations of {', '.join(users)}", known, 60, "slurmctld-slacct")
    log(f"slacct: {', '.join(users)} in account {LAB_ACCOUNT}, no submit limit")


def start_daemon(name: str, cmd: list[str], restart: bool, **kwargs: object) -> bool:
    """Starts `name` unless it runs (restarts it when its config changed). True when it was started."""
    pid = daemon_pid(name)
    if pid is not None and not restart:
        log(f"{name}: already running (pid {pid})")
        return False
    if pid is not None:
        log(f"{name}: config changed, restarting")
        terminate(name)
    pid = spawn(name, cmd, **kwargs)  # type: ignore[arg-type]
    log(f"{name}: started (pid {pid})")
    return True


def ssh_check(user: str) -> str:
    """Runs `sinfo` over SSH as `user` with the client key; returns its output (SLURM_CONF first)."""
    cmd = [
        "ssh",
        "-i",
        str(CLIENT_KEY),
        "-o",
        f"UserKnownHostsFile={KNOWN_HOSTS}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=10",
        "-p",
        str(SSH_PORT),
        f"{user}@{HOST}",
        'echo "$SLURM_CONF"; sinfo -h -o %P',
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        die(f"ssh as {user} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def cmd_start(accounting: bool) -> None:
    if os.geteuid() != 0:
        die("must run as root")
    if missing_packages():
        cmd_install()
    with state_lock():
        mkdir(STATE)
        mkdir(RUN)
        mkdir(LOGS)
        password = ensure_password()
        known_hosts_line, fingerprint = ensure_keys()
        changed = ensure_layout(password)
        ensure_munge()
        ensure_server_env()

        start_daemon("sshd", ["/usr/sbin/sshd", "-D", "-f", str(SSH_DIR / "sshd_config")], changed["sshd"])
        start_daemon(
            "munged",
            [
                "/usr/sbin/munged",
                "-F",
                f"--socket={MUNGE_SOCKET}",
                f"--key-file={MUNGE_DIR / 'munge.key'}",
                f"--pid-file={own_pid_file('munged')}",
                f"--log-file={LOGS / 'munged.log'}",
                f"--seed-file={MUNGE_DIR / 'munged.seed'}",
                "--num-threads=4",
            ],
            False,
            user="munge",
        )
        wait_for("the munge socket", MUNGE_SOCKET.exists, 20, "munged")
        if accounting:
            ensure_mariadb_datadir()
            start_daemon(
                "mariadbd",
                [
                    "/usr/sbin/mariadbd",
                    "--no-defaults",
                    "--user=root",
                    f"--datadir={DB_DIR / 'data'}",
                    f"--port={PORTS['mariadb']}",
                    "--bind-address=127.0.0.1",
                    f"--socket={DB_DIR / 'mariadb.sock'}",
                    f"--pid-file={own_pid_file('mariadbd')}",
                    f"--log-error={LOGS / 'mariadbd.log'}",
                    "--skip-name-resolve",
                    "--skip-log-bin",
                    "--innodb-buffer-pool-size=64M",
                    "--max-connections=100",
                ],
                False,
            )
            wait_for("mariadb", lambda: port_open(PORTS["mariadb"]), 60, "mariadbd")
            start_daemon(
                "slurmdbd",
                ["/usr/sbin/slurmdbd", "-D"],
                changed["slurmdbd"] or changed["slacct"],
                env=dict(base_env(), SLURM_CONF=str(SLURM_DIR / "slacct" / "slurm.conf")),
            )
            wait_for("slurmdbd", lambda: port_open(PORTS["slurmdbd"]), 60, "slurmdbd")
        for name, _, cluster_accounting, _ in CLUSTERS.values():
            if cluster_accounting and not accounting:
                continue
            conf = str(SLURM_DIR / name / "slurm.conf")
            start_daemon(
                f"slurmctld-{name}",
                ["/usr/sbin/slurmctld", "-D", "-f", conf],
                changed[name],
                env=slurm_env(name),
            )
            # A slurmd that runs keeps running when only its controller came back: it re-registers by
            # itself, and restarting it while jobs run would be a fault of its own.
            start_daemon(
                f"slurmd-{name}",
                ["/usr/sbin/slurmd", "-D", "-N", f"{name}-n1", "-f", conf],
                changed[name],
                env=slurm_env(name),
            )
        wait_for(f"sshd on port {SSH_PORT}", lambda: port_open(SSH_PORT), 20, "sshd")
        for name, _, cluster_accounting, _ in CLUSTERS.values():
            if cluster_accounting and not accounting:
                continue
            wait_for(
                f"{name}: node up in sinfo ({'/'.join(RESPONSIVE_NODE_STATES)})",
                lambda name=name: node_responsive(name),
                90,
                f"slurmd-{name}",
            )
            log(f"{name}: node {name}-n1 up")
        if accounting:
            wait_for("sacct on slacct", sacct_works, 60, "slurmdbd")
            log("slacct: sacct answers")
            ensure_associations()

        clusters = {}
        for key, (name, user, cluster_accounting, _) in CLUSTERS.items():
            if cluster_accounting and not accounting:
                continue
            clusters[key] = {
                "name": name,
                "user": user,
                "slurm_conf": str(SLURM_DIR / name / "slurm.conf"),
                "storage_root": str(SERVER_ROOT / key / "storage"),
                "working_root": str(SERVER_ROOT / key / "working"),
                "accounting": cluster_accounting,
            }
            out = ssh_check(user)
            if clusters[key]["slurm_conf"] not in out or "main" not in out:
                die(f"ssh as {user}: unexpected SLURM_CONF/sinfo output: {out!r}")
        chatty = dict(clusters[CHATTY_CLUSTER], user=CHATTY_USER)
        chatty |= {f"{sub}_root": str(SERVER_ROOT / CHATTY_KEY / sub) for sub in ("storage", "working")}
        out = ssh_check(CHATTY_USER)
        if not out.startswith(CHATTY_BANNER) or chatty["slurm_conf"] not in out:
            die(f"ssh as {CHATTY_USER}: expected the banner, then SLURM_CONF and sinfo, got {out!r}")
        log("ssh: key login works for " + ", ".join([*(c["user"] for c in clusters.values()), CHATTY_USER]))
        info = {
            "state_dir": str(STATE),
            "host": HOST,
            "port": SSH_PORT,
            "key_file": str(CLIENT_KEY),
            "known_hosts": str(KNOWN_HOSTS),
            "known_hosts_line": known_hosts_line.strip(),
            "host_key_fingerprint": fingerprint,
            "password": password,
            "server_env": str(SERVER_ENV),
            "accounting": accounting,
            "daemons": expected_daemons(accounting),
            "logs": str(LOGS),
            "clusters": clusters,
            CHATTY_KEY: chatty,
        }
        write_if_changed(INFO, json.dumps(info, indent=2) + "\n", 0o600)
        log(f"ready: {INFO}")


# ------------------------------------------------------------------------------------------- stop/status


def load_info() -> dict[str, object] | None:
    try:
        return json.loads(INFO.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def cmd_stop(names: list[str]) -> None:
    """Stops the named daemons (default: all), last started first; jobs of a running slurmd survive."""
    unknown = sorted(set(names) - set(ALL_DAEMONS))
    if unknown:
        die(f"no daemon named {', '.join(unknown)}; the daemons are {', '.join(ALL_DAEMONS)}")
    with state_lock():
        for name in reversed(ALL_DAEMONS):
            if names and name not in names:
                continue
            if terminate(name):
                log(f"{name}: stopped")
            else:
                log(f"{name}: not running")


def cmd_status() -> int:
    info = load_info()
    expected = info.get("daemons", ALL_DAEMONS) if info else ALL_DAEMONS
    ok = True
    for name in ALL_DAEMONS:
        pid = daemon_pid(name)
        if pid is not None:
            print(f"{name:20s} running  pid {pid}")
        else:
            note = "" if name in expected else "  (not used: started with --no-accounting)"  # type: ignore[operator]
            print(f"{name:20s} stopped{note}")
            ok = ok and name not in expected  # type: ignore[operator]
    print(f"{'info':20s} {INFO if INFO.exists() else 'missing'}")
    return 0 if ok else 1


def cmd_env() -> int:
    print(INFO)
    if not INFO.exists():
        print("testbed: no info file; run `scripts/testbed.sh start`", file=sys.stderr)
        return 1
    print(INFO.read_text(), end="")
    return 0


def cmd_load_others(count: int, cluster: str) -> int:
    """Makes another user's held jobs number ``count`` on the running clusters (see testbed_others.py)."""
    import testbed_others  # noqa: PLC0415 - only this subcommand needs it

    if count < 0:
        die("load-others: N must be 0 or more")
    info = load_info()
    running = info["clusters"] if info else {}  # type: ignore[index]
    keys = [k for k in CLUSTERS if cluster in ("all", k) and k in running]
    if not keys:
        die(f"load-others: cluster {cluster} is not running; run `scripts/testbed.sh start` first")
    testbed_others.ensure_other_user(GROUP)
    if "acct" in keys:
        ensure_associations()
    for key in keys:
        name = CLUSTERS[key][0]
        held = testbed_others.load_others(SLURM_DIR / name / "slurm.conf", base_env(), count)
        log(f"{name}: {held} held job(s) of {testbed_others.OTHER_USER}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="install the missing Debian packages")
    start = sub.add_parser("start", help="start everything that is not running (idempotent)")
    start.add_argument(
        "--no-accounting",
        action="store_true",
        help="skip MariaDB, slurmdbd and the accounting cluster 'slacct'",
    )
    stop = sub.add_parser("stop", help="stop the daemons this script started (or only the named ones)")
    stop.add_argument("daemons", nargs="*", metavar="DAEMON", help="one of: " + ", ".join(ALL_DAEMONS))
    sub.add_parser("status", help="show which daemons run; exit 0 when all run")
    sub.add_parser("env", help="print the info file path and content")
    others = sub.add_parser("load-others", help="make another user's held jobs number N (0: cancel them)")
    others.add_argument("count", type=int, metavar="N")
    others.add_argument("--cluster", choices=[*CLUSTERS, "all"], default="all")
    args = parser.parse_args()
    if args.command in ("install", "start", "stop", "load-others") and os.geteuid() != 0:
        die("must run as root")
    if args.command == "install":
        cmd_install()
    elif args.command == "start":
        no_accounting = args.no_accounting or os.environ.get("SL_TESTBED_NO_ACCOUNTING", "") not in ("", "0")
        cmd_start(accounting=not no_accounting)
    elif args.command == "stop":
        cmd_stop(args.daemons)
    elif args.command == "status":
        return cmd_status()
    elif args.command == "env":
        return cmd_env()
    elif args.command == "load-others":
        return cmd_load_others(args.count, args.cluster)
    return 0


if __name__ == "__main__":
    sys.exit(main())

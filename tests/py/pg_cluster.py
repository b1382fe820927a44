"""A private PostgreSQL for the multi-host tests and bench/bench_multihost.py: initdb into a temp dir,
the server on a Unix socket in that dir (no TCP port: listen_addresses=''), stopped at the end.

    with PgCluster() as pg:
        url = pg.create_db("q1")        # postgresql:///q1?host=<socket dir>&user=quantd

The server binaries come from Debian's postgresql package (QD_PG_BIN, default
/usr/lib/postgresql/15/bin). initdb refuses to run as root; as root the cluster belongs to the
`postgres` user the package creates, in a temp dir it can enter.
"""
import os
import pwd
import shutil
import subprocess
import tempfile

PG_BIN = os.environ.get("QD_PG_BIN", "/usr/lib/postgresql/15/bin")


def available():
    return all(os.access(os.path.join(PG_BIN, b), os.X_OK) for b in ("initdb", "pg_ctl", "postgres"))


class PgCluster:
    def __init__(self):
        self.root = None
        self.started = False

    def _run(self, *cmd):
        cmd = [os.path.join(PG_BIN, cmd[0])] + list(cmd[1:])
        if os.getuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        return r

    def start(self):
        # short: a socket path must fit in 107 bytes
        self.root = tempfile.mkdtemp(prefix="qdpg-", dir="/tmp")
        os.chmod(self.root, 0o755)
        self.sock = os.path.join(self.root, "s")
        os.mkdir(self.sock)
        if os.getuid() == 0:
            pw = pwd.getpwnam("postgres")
            for d in (self.root, self.sock):
                os.chown(d, pw.pw_uid, pw.pw_gid)
        data = os.path.join(self.root, "data")
        self._run("initdb", "-D", data, "-U", "quantd", "--auth=trust", "-E", "UTF8", "--no-sync")
        # fsync off: a test cluster lives for minutes and is thrown away
        opts = f"-k {self.sock} -c listen_addresses='' -c fsync=off -c max_connections=100"
        self._run("pg_ctl", "-D", data, "-o", opts, "-l", os.path.join(self.root, "log"), "-w", "start")
        self.started = True
        return self

    def create_db(self, name):
        self._run("createdb", "-h", self.sock, "-U", "quantd", name)
        return self.url(name)

    def url(self, name):
        return f"postgresql:///{name}?host={self.sock}&user=quantd"

    def psql(self, name, sql):
        """Runs sql in database name; returns the rows as lists of strings."""
        r = self._run("psql", "-h", self.sock, "-U", "quantd", "-d", name, "-At", "-F", "\t", "-c", sql)
        return [line.split("\t") for line in r.stdout.splitlines() if line]

    def stop(self):
        if self.started:
            try:
                self._run("pg_ctl", "-D", os.path.join(self.root, "data"), "-m", "immediate", "stop")
            except RuntimeError:
                pass
            self.started = False
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

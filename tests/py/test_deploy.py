"""On-prem deployment (deploy/, debian/): what an administrator installs is complete and the
service runs the way systemd will run it.

- `make install DESTDIR=…` puts every file where the unit, the daemon and the man pages say;
- `systemd-analyze verify` accepts the unit (on a copy whose ExecStart points into DESTDIR) and
  `systemd-analyze security` rates it (printed; asserted to stay in the "OK" band);
- systemd-sysusers and systemd-tmpfiles, run into a scratch root, create the user and the state
  directory the unit names;
- the installed config documents every key of the daemon's table with its default, and so does
  quantd.conf(5);
- the installed quantd, started with the unit's own command line, environment and sandbox (an
  unprivileged user, UMask=0077, NoNewPrivileges, and the seccomp filters systemd builds for
  SystemCallFilter=@system-service ~@privileged, MemoryDenyWriteExecute and
  RestrictAddressFamilies, rebuilt here with libseccomp from `systemd-analyze syscall-filter`),
  sends READY=1 from its main pid once it listens, runs a real PTQ job (OpenBLAS included),
  and on SIGTERM sends STOPPING=1 and exits 0;
- `make uninstall` removes all of it but a config file the administrator edited;
- the Debian package builds from the release tree and holds the expected files, dependencies,
  conffile and maintainer scripts; installed into a throw-away overlay of this machine's root
  that then boots systemd in a container, it creates the user and the state directory, enables
  the unit, and systemd itself runs quantd under the unit's sandbox (QD_TEST_DEB=0 skips these
  two: they compile everything again, about 2 minutes on 2 cores).
"""
import ctypes
import ctypes.util
import errno
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

import pytest

from service_fixtures import BUILDDIR, FIXTURES, SRCDIR, Quantd, free_port, quantd_bin  # noqa: F401

pytestmark = pytest.mark.skipif(not shutil.which("systemd-analyze"),
                                reason="systemd-analyze absent (Debian package systemd)")


def run(cmd, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(cmd, **kw)


def make_vars(target="print-install-dirs"):
    r = run(["make", "-s", "--no-print-directory", "-C", BUILDDIR, target])
    assert r.returncode == 0, r.stderr
    return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)


def parse_unit(path):
    """A unit file as {section: [(key, value)]}, keeping repeated keys in order."""
    out, sec = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                sec = line.strip("[]")
                out.setdefault(sec, [])
                continue
            k, v = line.split("=", 1)
            out[sec].append((k.strip(), v.strip()))
    return out


def unit_get(unit, sec, key):
    vals = [v for k, v in unit.get(sec, []) if k == key]
    return vals[-1] if vals else None


def print_config_keys(quantd_bin):
    """[(section, key, default)] from `quantd --print-config`, i.e. from daemon/conf.c's table."""
    r = run([quantd_bin, "--print-config"])
    assert r.returncode == 0, r.stderr
    keys, sec = [], None
    for line in r.stdout.splitlines():
        if line.startswith("["):
            sec = line.strip("[]")
        m = re.match(r"^([a-z_][a-z_0-9]*) = ?(.*)$", line)
        if m:
            keys.append((sec, m.group(1), m.group(2)))
    assert len(keys) >= 10, r.stdout
    return keys


# --- the DESTDIR install --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def inst():
    """`make install DESTDIR=<scratch>`; every path the tests need. The scratch tree is readable by
    all (0755), so that the daemon can run from it as an unprivileged user."""
    base = tempfile.mkdtemp(prefix="quantd-deploy-")
    os.chmod(base, 0o755)
    dest = os.path.join(base, "dest")
    r = run(["make", "-C", BUILDDIR, "install", f"DESTDIR={dest}"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    d = make_vars()
    for k, v in d.items():
        assert v and v != "no", f"{k} is {v!r}: configure found no systemd.pc (install the Debian package systemd)"

    def at(path):
        return dest + path

    unit_path = at(d["systemdsystemunitdir"] + "/quantd.service")
    yield dict(base=base, dest=dest, dirs=d, at=at, unit_path=unit_path,
               unit=parse_unit(unit_path) if os.path.exists(unit_path) else None)
    shutil.rmtree(base, ignore_errors=True)


def test_install_puts_every_file_in_place(inst):
    d, at = inst["dirs"], inst["at"]
    expected = [
        d["bindir"] + "/quantd", d["bindir"] + "/quant",
        d["systemdsystemunitdir"] + "/quantd.service",
        d["sysusersdir"] + "/quantd.conf", d["tmpfilesdir"] + "/quantd.conf",
        d["sysconfdir"] + "/quantd/quantd.conf",
        d["mandir"] + "/man8/quantd.8", d["mandir"] + "/man1/quant.1", d["mandir"] + "/man5/quantd.conf.5",
    ]
    # the dashboard: every file of web/ (the dashboard's own list is in Makefile.am)
    web = os.path.join(SRCDIR, "web")
    for root, _, files in os.walk(web):
        for f in files:
            if not f.startswith("."):
                expected.append(d["webdir"] + "/" + os.path.relpath(os.path.join(root, f), web))
    missing = [p for p in expected if not os.path.isfile(at(p))]
    assert not missing, f"not installed: {missing}"
    for b in ("quantd", "quant"):
        assert os.access(at(d["bindir"] + "/" + b), os.X_OK)


def files_under(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_uninstall_removes_everything_but_an_edited_config(inst, tmp_path):
    """`make uninstall` takes back every file; an administrator's edited config survives both
    uninstall and a later install over it."""
    dest = str(tmp_path / "d")
    make = ["make", "-s", "-C", BUILDDIR]
    assert run(make + ["install", f"DESTDIR={dest}"]).returncode == 0
    assert len(files_under(dest)) == len(files_under(inst["dest"]))
    r = run(make + ["uninstall", f"DESTDIR={dest}"])
    assert r.returncode == 0, r.stderr
    assert files_under(dest) == []

    conf = dest + inst["dirs"]["sysconfdir"] + "/quantd/quantd.conf"
    assert run(make + ["install", f"DESTDIR={dest}"]).returncode == 0
    with open(conf, "a") as f:
        f.write("\n[jobs]\nworkers = 3\n")
    r = run(make + ["install", f"DESTDIR={dest}"])
    assert r.returncode == 0 and "keeping" in r.stdout, r.stdout
    assert open(conf).read().endswith("workers = 3\n")
    r = run(make + ["uninstall", f"DESTDIR={dest}"])
    assert r.returncode == 0 and "it was edited" in r.stdout, r.stdout
    assert files_under(dest) == [os.path.relpath(conf, dest)]


def test_unit_paths_exist_in_the_install(inst):
    """ExecStart's binary and --config file are the installed ones; the daemon's compiled-in
    dashboard folder (web_root's default) is where the dashboard was installed."""
    argv = shlex.split(unit_get(inst["unit"], "Service", "ExecStart"))
    assert argv[0] == inst["dirs"]["bindir"] + "/quantd"
    assert argv[1:] == ["--config", inst["dirs"]["sysconfdir"] + "/quantd/quantd.conf"]
    assert os.access(inst["at"](argv[0]), os.X_OK)
    assert os.path.isfile(inst["at"](argv[2]))
    out = run([inst["at"](argv[0]), "--print-config"]).stdout
    m = re.search(r"the installed copy \(([^)]+)\)", out)
    assert m, "web_root's doc no longer names the installed dashboard folder"
    assert m.group(1) == inst["dirs"]["webdir"]
    assert os.path.isfile(inst["at"](m.group(1) + "/index.html"))


def test_unit_settings(inst):
    """What the unit promises: notify type, dedicated user, directories, restart, a stop timeout
    above the daemon's shutdown_timeout, and the hardening."""
    u = inst["unit"]
    g = lambda k: unit_get(u, "Service", k)  # noqa: E731
    assert g("Type") == "notify"
    assert g("User") == g("Group") == "quantd"
    assert (g("StateDirectory"), g("ConfigurationDirectory"), g("RuntimeDirectory")) == ("quantd",) * 3
    assert g("Restart") == "on-failure"
    assert g("UMask") == "0077"
    assert int(g("LimitNOFILE")) >= 65536      # max_connections' largest value, plus files
    stop = int(g("TimeoutStopSec").rstrip("s"))
    keys = {k: v for _, k, v in print_config_keys(inst["at"](inst["dirs"]["bindir"] + "/quantd"))}
    assert stop >= int(keys["shutdown_timeout"]) + 20, "TimeoutStopSec must leave time to requeue jobs"
    for k, v in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                 ("PrivateTmp", "yes"), ("PrivateDevices", "yes"), ("ProtectKernelTunables", "yes"),
                 ("ProtectKernelModules", "yes"), ("ProtectKernelLogs", "yes"),
                 ("ProtectControlGroups", "yes"), ("MemoryDenyWriteExecute", "yes"),
                 ("LockPersonality", "yes"), ("RestrictNamespaces", "yes"), ("RestrictRealtime", "yes"),
                 ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"), ("CapabilityBoundingSet", "")]:
        assert g(k) == v, f"{k}={g(k)!r}, expected {v!r}"
    filters = [v for k, v in u["Service"] if k == "SystemCallFilter"]
    assert filters[0] == "@system-service"
    assert unit_get(u, "Install", "WantedBy") == "multi-user.target"


def verify_copy(inst, tmp_path, exec_path):
    """systemd-analyze verify on a copy of the installed unit whose ExecStart binary is exec_path,
    with the installed man pages on MANPATH (verify checks Documentation= too)."""
    d = tmp_path / "units"
    d.mkdir(exist_ok=True)
    text = open(inst["unit_path"]).read().replace(
        "ExecStart=" + inst["dirs"]["bindir"] + "/quantd", "ExecStart=" + exec_path)
    (d / "quantd.service").write_text(text)
    env = dict(os.environ, MANPATH=inst["at"](inst["dirs"]["mandir"]))
    return run(["systemd-analyze", "verify", str(d / "quantd.service")], env=env), d / "quantd.service"


def test_systemd_analyze_verify(inst, tmp_path):
    r, _ = verify_copy(inst, tmp_path, inst["at"](inst["dirs"]["bindir"] + "/quantd"))
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    # the check is real: a binary that is not there fails it
    r, _ = verify_copy(inst, tmp_path, "/nonexistent/quantd")
    assert r.returncode != 0 and "not executable" in r.stderr, r.stderr


def test_systemd_analyze_security_score(inst, tmp_path):
    _, unit = verify_copy(inst, tmp_path, inst["at"](inst["dirs"]["bindir"] + "/quantd"))
    r = run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)])
    m = re.search(r"Overall exposure level for quantd\.service: ([0-9.]+) (\w+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    exposed = [ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("✗")]
    print(f"systemd-analyze security: {m.group(1)} {m.group(2)}; still exposed: {' '.join(exposed)}")
    assert float(m.group(1)) <= 2.0, r.stdout


def test_sysusers_and_tmpfiles_create_user_and_state_dir(inst, tmp_path):
    """Into a scratch root: the user the unit runs as, with the state directory as home and no
    shell, and the state directory with the unit's owner and mode."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    r = run(["systemd-sysusers", f"--root={root}", inst["at"](inst["dirs"]["sysusersdir"] + "/quantd.conf")])
    assert r.returncode == 0, r.stderr
    users = {ln.split(":")[0]: ln.strip().split(":") for ln in open(root / "etc" / "passwd")}
    u = users["quantd"]
    assert u[5] == "/var/lib/quantd" and u[6].endswith("nologin"), u
    assert int(u[2]) < 1000, "a system user"
    r = run(["systemd-tmpfiles", f"--root={root}", "--create", inst["at"](inst["dirs"]["tmpfilesdir"] + "/quantd.conf")])
    assert r.returncode == 0, r.stderr
    st = os.stat(root / "var" / "lib" / "quantd")
    assert (st.st_uid, st.st_gid) == (int(u[2]), int(u[3]))
    mode = unit_get(inst["unit"], "Service", "StateDirectoryMode")
    assert oct(st.st_mode & 0o7777) == oct(int(mode, 8)) == oct(0o750)


# --- the config file and its documentation ---------------------------------------------------------

def test_installed_config_documents_every_key(inst):
    """Every key of the daemon's table, under its section, commented out at its default."""
    binary = inst["at"](inst["dirs"]["bindir"] + "/quantd")
    text = open(inst["at"](inst["dirs"]["sysconfdir"] + "/quantd/quantd.conf")).read()
    sec, found = None, {}
    for line in text.splitlines():
        if line.startswith("["):
            sec = line.strip("[]")
        m = re.match(r"^#([a-z_][a-z_0-9]*) = ?(.*)$", line)
        if m:
            found[m.group(1)] = (sec, m.group(2))
    for s, k, v in print_config_keys(binary):
        assert found.get(k) == (s, v), f"{k}: config has {found.get(k)}, table says [{s}] {v!r}"
    assert not re.search(r"^[a-z_]+ =", text, re.M), "no key may be set: the file shows the defaults"


def test_man_page_documents_every_key_with_its_default(quantd_bin):
    """deploy/man/quantd.conf.5 is written by hand: it must list every key of the table (and no
    other), each under its section with the table's default."""
    src = open(os.path.join(SRCDIR, "deploy", "man", "quantd.conf.5")).read().replace("\\-", "-")
    sec, doc = None, {}
    for line in src.splitlines():
        m = re.match(r"^\.SH \[(\w+)\]", line)
        if m:
            sec = m.group(1)
        m = re.match(r"^\\fB([a-z_]+)\\fR = .*\(default (?:\\fB(.*)\\fR|(empty))\)$", line)
        if m:
            doc[m.group(1)] = (sec, m.group(2) if m.group(3) is None else "")
    table = {k: (s, v) for s, k, v in print_config_keys(quantd_bin)}
    missing = {k: v for k, v in table.items() if doc.get(k) != v}
    assert not missing, f"quantd.conf(5) lacks or misstates (section, default) of {missing}; it has {doc}"
    assert set(doc) == set(table), f"documented but not in the table: {set(doc) - set(table)}"


@pytest.mark.parametrize("page", ["quantd.8", "quant.1", "quantd.conf.5"])
def test_man_pages_render_cleanly(page):
    if not shutil.which("groff"):
        pytest.skip("groff absent")
    r = run(["groff", "-man", "-Tutf8", "-ww", "-z", os.path.join(SRCDIR, "deploy", "man", page)])
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


# --- the daemon as the unit starts it ---------------------------------------------------------------

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ, SCMP_CMP_GT, SCMP_CMP_MASKED_EQ = 4, 6, 7


def SCMP_ACT_ERRNO(e):
    return 0x00050000 | (e & 0xFFFF)


class ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def syscall_groups():
    """systemd's own syscall groups: {"@name": [members]} from `systemd-analyze syscall-filter`."""
    out = run(["systemd-analyze", "syscall-filter", "--no-pager"]).stdout
    groups, cur = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            cur = groups.setdefault(line.strip(), [])
        elif cur is not None and line.strip() and not line.strip().startswith("#"):
            cur.append(line.strip())
    return groups


def resolve(groups, names):
    out = set()
    for n in names:
        out |= resolve(groups, groups[n]) if n.startswith("@") else {n}
    return out


class Sandbox:
    """The seccomp filters systemd installs for quantd.service's SystemCallFilter=,
    SystemCallErrorNumber=EPERM, MemoryDenyWriteExecute= and RestrictAddressFamilies=, built
    in the parent and loaded in the child just before exec (NoNewPrivileges comes with them)."""

    def __init__(self, unit):
        lib = ctypes.util.find_library("seccomp")
        if not lib:
            pytest.skip("libseccomp absent")
        s = self.lib = ctypes.CDLL(lib)
        s.seccomp_init.restype = ctypes.c_void_p
        s.seccomp_init.argtypes = [ctypes.c_uint32]
        s.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                             ctypes.POINTER(ArgCmp)]
        s.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        s.seccomp_load.argtypes = [ctypes.c_void_p]
        groups = syscall_groups()
        allow, deny = set(), set()
        for k, v in unit["Service"]:
            if k == "SystemCallFilter":
                (deny if v.startswith("~") else allow).update(v.lstrip("~").split())
        assert allow, "the unit has no allow list"
        allowed = resolve(groups, allow | {"@default"}) - resolve(groups, deny)
        self.allowed = allowed
        eperm = SCMP_ACT_ERRNO(errno.EPERM)
        self.filters = []

        def rule(ctx, action, name, *cmps):
            nr = s.seccomp_syscall_resolve_name(name.encode())
            if nr == -1:
                return
            arr = (ArgCmp * len(cmps))(*[ArgCmp(*c) for c in cmps])
            assert s.seccomp_rule_add_array(ctx, action, nr, len(cmps), arr) == 0, name

        if unit_get(unit, "Service", "MemoryDenyWriteExecute") == "yes":
            ctx = s.seccomp_init(SCMP_ACT_ALLOW)          # as systemd's seccomp_memory_deny_write_execute
            wx, x = 0x2 | 0x4, 0x4                         # PROT_WRITE|PROT_EXEC, PROT_EXEC
            rule(ctx, eperm, "mmap", (2, SCMP_CMP_MASKED_EQ, wx, wx))
            rule(ctx, eperm, "mprotect", (2, SCMP_CMP_MASKED_EQ, x, x))
            rule(ctx, eperm, "pkey_mprotect", (2, SCMP_CMP_MASKED_EQ, x, x))
            rule(ctx, eperm, "shmat", (2, SCMP_CMP_MASKED_EQ, 0o100000, 0o100000))   # SHM_EXEC
            self.filters.append(ctx)

        fams = unit_get(unit, "Service", "RestrictAddressFamilies")
        if fams:
            ok = {getattr(socket, f) for f in fams.split()}
            ctx = s.seccomp_init(SCMP_ACT_ALLOW)
            for fam in range(0, max(ok) + 1):
                if fam not in ok:
                    rule(ctx, SCMP_ACT_ERRNO(errno.EAFNOSUPPORT), "socket", (0, SCMP_CMP_EQ, fam, 0))
            rule(ctx, SCMP_ACT_ERRNO(errno.EAFNOSUPPORT), "socket", (0, SCMP_CMP_GT, max(ok), 0))
            self.filters.append(ctx)

        # SystemCallFilter=: an allow list. Loaded last, as systemd does: it forbids seccomp().
        ctx = s.seccomp_init(eperm)
        for name in sorted(allowed):
            nr = s.seccomp_syscall_resolve_name(name.encode())
            if nr != -1:
                assert s.seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, 0, None) == 0, name
        self.filters.append(ctx)

    def preexec(self):
        for ctx in self.filters:
            if self.lib.seccomp_load(ctx) != 0:
                os._exit(126)


def unprivileged():
    """uid/gid for User= when the tests run as root (the unit's user need not exist here)."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam("nobody")
        return pw.pw_uid, pw.pw_gid
    except KeyError:
        return 65534, 65534


def spawn_as_unit(sandbox, argv, env, log, ids):
    kw = dict(env=env, stdout=log, stderr=subprocess.STDOUT, umask=0o077, preexec_fn=sandbox.preexec,
              cwd="/", close_fds=True)
    if ids:
        kw.update(user=ids[0], group=ids[1], extra_groups=[])
    return subprocess.Popen(argv, **kw)


def test_sandbox_is_real(inst):
    """The emulated filters bite: W+X memory and a syscall outside @system-service are refused
    in a child run under them, and the same child without them is allowed both."""
    sb = Sandbox(inst["unit"])
    assert "mincore" not in sb.allowed and "setpriority" in sb.allowed and "mmap" in sb.allowed
    probe = ("import ctypes, mmap\n"
             "try:\n    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC); wx = 'ok'\n"
             "except PermissionError:\n    wx = 'EPERM'\n"
             "libc = ctypes.CDLL(None, use_errno=True)\n"
             "m = mmap.mmap(-1, 4096); vec = ctypes.create_string_buffer(1)\n"
             "addr = ctypes.addressof(ctypes.c_char.from_buffer(m))\n"
             "rc = libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(4096), vec)\n"
             "mc = 'ok' if rc == 0 else 'EPERM' if ctypes.get_errno() == 1 else 'errno %d' % ctypes.get_errno()\n"
             "print(wx, mc)\n")
    base = run(["python3", "-c", probe])
    assert base.stdout.split() == ["ok", "ok"], base.stdout + base.stderr
    r = subprocess.run(["python3", "-c", probe], capture_output=True, text=True, preexec_fn=sb.preexec)
    assert r.stdout.split() == ["EPERM", "EPERM"], r.stdout + r.stderr


class NotifySocket:
    """A fake $NOTIFY_SOCKET (abstract AF_UNIX datagram socket) that also gets each sender's pid,
    as systemd does to enforce NotifyAccess=main."""

    def __init__(self):
        self.name = f"quantd-test-notify-{os.getpid()}-{time.monotonic_ns()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.messages = []   # (pid, {key: value})

    @property
    def env(self):
        return "@" + self.name

    def wait_for(self, key, value, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for pid, m in self.messages:
                if m.get(key) == value:
                    return pid, m
            self.sock.settimeout(max(0.01, deadline - time.time()))
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except socket.timeout:
                break
            pid = None
            for lvl, typ, cdata in anc:
                if lvl == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", cdata[:12])[0]
            fields = dict(ln.split("=", 1) for ln in data.decode().splitlines() if "=" in ln)
            self.messages.append((pid, fields))
        raise AssertionError(f"no {key}={value} within {timeout}s; got {self.messages}")

    def close(self):
        self.sock.close()


def test_daemon_started_as_the_unit_starts_it(inst):
    unit = inst["unit"]
    argv = shlex.split(unit_get(unit, "Service", "ExecStart"))
    argv[0] = inst["at"](argv[0])
    conf = inst["at"](argv[2])
    argv[2] = conf
    # the administrator's edit: a free port, and the dashboard where DESTDIR put it
    port = free_port()
    web = inst["at"](inst["dirs"]["webdir"])
    text = open(conf).read()
    text = re.sub(r"^#listen = .*$", f"listen = 127.0.0.1:{port}", text, flags=re.M)
    text = re.sub(r"^#web_root = .*$", f"web_root = {web}", text, flags=re.M)
    open(conf, "w").write(text)

    ids = unprivileged()
    dirs = {}
    for kind, var in (("state", "STATE_DIRECTORY"), ("run", "RUNTIME_DIRECTORY")):
        p = os.path.join(inst["base"], kind, "quantd")   # as StateDirectory=/RuntimeDirectory= make them
        os.makedirs(p)
        os.chmod(os.path.dirname(p), 0o755)
        os.chmod(p, int(unit_get(unit, "Service", f"{'State' if kind == 'state' else 'Runtime'}DirectoryMode"), 8))
        if ids:
            os.chown(p, *ids)
        dirs[var] = p
    notify = NotifySocket()
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
           "NOTIFY_SOCKET": notify.env, "CONFIGURATION_DIRECTORY": os.path.dirname(conf),
           "INVOCATION_ID": "0" * 32, **dirs}
    sb = Sandbox(unit)
    log_path = os.path.join(inst["base"], "quantd.log")
    log = open(log_path, "wb")
    proc = spawn_as_unit(sb, argv, env, log, ids)
    d = Quantd(argv[0], dirs["STATE_DIRECTORY"], port=port)
    d.proc, d.log, d.log_path = proc, log, log_path
    try:
        pid, m = notify.wait_for("READY", "1", timeout=20)
        assert pid == proc.pid, "READY=1 must come from the main process (NotifyAccess=main)"
        assert "listening" in m.get("STATUS", ""), m
        # READY means listening: no retry needed
        r = d.request("GET", "/v1/health", timeout=5)
        assert r.status == 200, r.body
        r = d.request("GET", "/", timeout=5)
        assert r.status == 200 and b"<html" in r.body.lower(), (r.status, r.body[:200])

        # a real job: the engine and OpenBLAS under MemoryDenyWriteExecute and the syscall filter
        mdl = d.upload_ok("models", os.path.join(FIXTURES, "mlp.onnx"))
        x = d.upload_ok("datasets", os.path.join(FIXTURES, "mlp.sample.npy"))
        job = d.submit({"type": "ptq", "model": mdl["id"], "calibration": x["id"],
                        "config": {"adaround": {"iterations": 50}}})
        j = d.wait(job["id"], {"succeeded", "failed", "cancelled"}, timeout=300)
        assert j["state"] == "succeeded", (j.get("error"), d.logtext())
        assert {"model.qdq.onnx", "report.json"} <= {a["name"] for a in j["artifacts"]}

        # UMask=0077 and User=: nothing the daemon wrote is open to others, all of it is its own
        state = dirs["STATE_DIRECTORY"]
        for root, dnames, fnames in os.walk(state):
            for n in dnames + fnames:
                st = os.lstat(os.path.join(root, n))
                assert st.st_mode & 0o077 == 0, f"{n}: mode {oct(st.st_mode)}"
                if ids:
                    assert st.st_uid == ids[0], n

        proc.send_signal(signal.SIGTERM)
        pid, m = notify.wait_for("STOPPING", "1", timeout=10)
        assert pid == proc.pid
        rc = proc.wait(timeout=int(unit_get(unit, "Service", "TimeoutStopSec").rstrip("s")))
        assert rc == 0, d.logtext()
        text = d.logtext()
        assert "Operation not permitted" not in text and "Permission denied" not in text, text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        notify.close()


# --- the Debian package -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    """dpkg-buildpackage -b from the release tree; the path of the quantd .deb."""
    if os.environ.get("QD_TEST_DEB") == "0":
        pytest.skip("QD_TEST_DEB=0")
    for tool in ("dpkg-buildpackage", "dh", "dpkg-deb"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} absent (Debian packages dpkg-dev, debhelper)")
    tmp_path = tmp_path_factory.mktemp("deb")
    # from the release tarball, as a packager would; never in the (possibly configured) source tree
    # (`make distdir` writes the release tree without packing it)
    src = tmp_path / "quantd-src"
    r = run(["make", "-C", BUILDDIR, "distdir", f"distdir={src}"])
    assert r.returncode == 0, r.stderr[-3000:]
    env = dict(os.environ, DEB_BUILD_OPTIONS=f"nocheck parallel={os.cpu_count() or 2}",
               DEB_BUILD_PROFILES="nocheck")
    t0 = time.time()
    r = run(["dpkg-buildpackage", "-b", "-us", "-uc"], cwd=src, env=env, timeout=1800,
            stderr=subprocess.STDOUT, capture_output=False, stdout=subprocess.PIPE)
    if r.returncode != 0:
        pytest.fail(f"dpkg-buildpackage exited {r.returncode}:\n{r.stdout[-6000:]}")
    print(f"dpkg-buildpackage took {time.time() - t0:.0f} s")
    debs = [f for f in os.listdir(tmp_path) if f.startswith("quantd_") and f.endswith(".deb")]
    assert len(debs) == 1, os.listdir(tmp_path)
    return str(tmp_path / debs[0])


def test_debian_package_has_the_expected_contents(deb, tmp_path):
    listing = run(["dpkg-deb", "-c", deb]).stdout
    files = {ln.split()[-1].lstrip(".") for ln in listing.splitlines() if not ln.startswith("d")}
    expected = {"/usr/bin/quantd", "/usr/bin/quant", "/lib/systemd/system/quantd.service",
                "/usr/lib/sysusers.d/quantd.conf", "/usr/lib/tmpfiles.d/quantd.conf",
                "/etc/quantd/quantd.conf", "/usr/share/man/man8/quantd.8.gz",
                "/usr/share/man/man1/quant.1.gz", "/usr/share/man/man5/quantd.conf.5.gz",
                "/usr/share/quantd/web/index.html", "/usr/share/quantd/web/app.js",
                "/usr/share/doc/quantd/copyright"}
    assert expected <= files, f"missing from the .deb: {expected - files}\n{listing}"
    assert not any(f.startswith("/usr/local") for f in files), listing

    x = tmp_path / "x"
    assert run(["dpkg-deb", "-R", deb, str(x)]).returncode == 0
    unit = parse_unit(x / "lib/systemd/system/quantd.service")
    assert unit_get(unit, "Service", "ExecStart") == "/usr/bin/quantd --config /etc/quantd/quantd.conf"
    depends = run(["dpkg-deb", "-f", deb, "Depends"]).stdout
    for lib in ("libopenblas", "libmicrohttpd", "libsqlite3", "libuv1", "libjansson", "libsystemd0",
                "libprotobuf-c", "libcurl", "libjs-chart.js"):
        assert lib in depends, f"{lib} not in Depends: {depends}"
    assert (x / "DEBIAN/conffiles").read_text().split() == ["/etc/quantd/quantd.conf"]
    postinst = (x / "DEBIAN/postinst").read_text()
    # the user first, then /var/lib/quantd owned by it
    assert "systemd-sysusers" in postinst and "systemd-tmpfiles" in postinst, postinst
    assert postinst.index("systemd-sysusers") < postinst.index("systemd-tmpfiles"), postinst
    assert re.search(r"systemd-tmpfiles .*--create quantd\.conf", postinst), postinst
    assert re.search(r"deb-systemd-helper\b.*\benable\b.*quantd\.service", postinst), postinst
    assert "_dh_action=start" in postinst and re.search(r"deb-systemd-invoke .*'quantd\.service'", postinst), postinst
    postrm = (x / "DEBIAN/postrm").read_text()
    assert re.search(r'"\$1" = "purge".*\n\s*rm -rf /var/lib/quantd', postrm), postrm


# --- the package under a real systemd ----------------------------------------------------------------

NSPAWN_CHECKS = r"""#!/bin/sh
# Runs at boot inside the container (qtest.service, after multi-user.target); results on /out.
exec >/out/result.txt 2>&1
echo "enabled=$(systemctl is-enabled quantd)"
for i in $(seq 1 60); do [ "$(systemctl is-active quantd)" = active ] && break; sleep 1; done
systemctl show quantd -p Type -p ActiveState -p SubState -p StatusText -p NRestarts
PID=$(systemctl show -p MainPID --value quantd)
grep -E '^(Uid|CapEff|NoNewPrivs|Seccomp):' /proc/$PID/status
stat -c 'state=%U %a' /var/lib/quantd
python3 /out/job.py
find /var/lib/quantd -mindepth 1 -perm /077 -printf 'open_to_others=%p\n'
systemd-analyze security quantd --no-pager | grep 'Overall exposure'
systemctl kill -s KILL quantd
for i in $(seq 1 30); do sleep 1; [ "$(systemctl show -p NRestarts --value quantd)" = 1 ] &&
  [ "$(systemctl is-active quantd)" = active ] && break; done
echo "after_kill=$(systemctl is-active quantd) restarts=$(systemctl show -p NRestarts --value quantd)"
systemctl stop quantd
systemctl show quantd -p Result -p ExecMainStatus -p ActiveState | sed 's/^/stopped_/'
echo done=1
systemctl poweroff
"""

NSPAWN_JOB = """import json, time, urllib.request
def req(method, path, body=None, ctype=None):
    r = urllib.request.Request("http://127.0.0.1:8080" + path, data=body, method=method,
                               headers={"Content-Type": ctype} if ctype else {})
    with urllib.request.urlopen(r, timeout=60) as f:
        raw = f.read()
        return json.loads(raw) if "json" in f.headers.get("Content-Type", "") else raw
print("health=" + req("GET", "/v1/health")["status"])
print("dashboard=" + str(b"<html" in req("GET", "/").lower()))
m = req("POST", "/v1/models", open("/out/mlp.onnx", "rb").read(), "application/octet-stream")
x = req("POST", "/v1/datasets", open("/out/mlp.sample.npy", "rb").read(), "application/octet-stream")
j = req("POST", "/v1/jobs", json.dumps({"type": "ptq", "model": m["id"], "calibration": x["id"],
        "config": {"adaround": {"iterations": 50}}}).encode(), "application/json")
for _ in range(600):
    j = req("GET", "/v1/jobs/" + j["id"])
    if j["state"] in ("succeeded", "failed", "cancelled"):
        break
    time.sleep(0.5)
print("job=" + j["state"], j.get("error") or "")
"""


def test_package_installs_and_runs_under_systemd(deb, tmp_path):
    """The .deb installed (dpkg -i) into a throw-away overlay of this machine's root, which then
    boots systemd in a container (systemd-nspawn, private network): the postinst created the user
    and the state directory and enabled the unit; systemd starts it with the whole sandbox, it
    becomes active (READY=1), serves the API and the dashboard, runs a PTQ job, is restarted
    after SIGKILL, and stops cleanly. The host is untouched (the overlay's upper layer is a tmpfs
    in a private mount namespace). Needs root, overlayfs and systemd-nspawn (systemd-container)."""
    if os.geteuid() != 0 or not shutil.which("systemd-nspawn") or not shutil.which("unshare"):
        pytest.skip("needs root, systemd-nspawn (Debian package systemd-container) and unshare")
    out = tmp_path / "out"
    out.mkdir()
    (out / "job.py").write_text(NSPAWN_JOB)
    shutil.copy(os.path.join(FIXTURES, "mlp.onnx"), out)
    shutil.copy(os.path.join(FIXTURES, "mlp.sample.npy"), out)
    checks = tmp_path / "qtest.sh"
    checks.write_text(NSPAWN_CHECKS)
    checks.chmod(0o755)
    m, t = tmp_path / "merged", tmp_path / "t"
    m.mkdir()
    t.mkdir()
    script = f"""set -e
mount -t tmpfs tmpfs {t}
mkdir {t}/upper {t}/work
mount -t overlay overlay -o lowerdir=/,upperdir={t}/upper,workdir={t}/work {m}
cp {deb} {m}/root/quantd.deb
mount --bind /proc {m}/proc; mount --bind /dev {m}/dev
chroot {m} dpkg -i /root/quantd.deb
umount {m}/proc {m}/dev
cp {checks} {m}/usr/local/sbin/qtest.sh
printf '[Unit]\nAfter=multi-user.target\n[Service]\nType=oneshot\nExecStart=/usr/local/sbin/qtest.sh\n' \
  >{m}/etc/systemd/system/qtest.service
ln -s /etc/systemd/system/qtest.service {m}/etc/systemd/system/multi-user.target.wants/qtest.service
mkdir {m}/out
echo "== booting"
timeout 300 systemd-nspawn -q -D {m} --boot --register=no --keep-unit --link-journal=no \
  --private-network --bind={out}:/out --console=pipe </dev/null
"""
    r = run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], timeout=400)
    log = r.stdout[-3000:] + r.stderr[-3000:]
    if "== booting" not in r.stdout:
        if "dpkg" in log and "Setting up quantd" not in log:
            pytest.fail(f"dpkg -i failed:\n{log}")
        pytest.skip(f"no overlay/nspawn container here:\n{log}")
    assert "Creating user 'quantd'" in r.stdout + r.stderr, log
    res = (out / "result.txt").read_text() if (out / "result.txt").exists() else ""
    print(res)
    kv = dict(ln.split("=", 1) for ln in res.splitlines() if "=" in ln)
    proc = {ln.split(":")[0]: ln.split(":", 1)[1].split() for ln in res.splitlines() if re.match(r"^\w+:\t", ln)}
    assert kv.get("done") == "1", res + log
    assert kv["enabled"] == "enabled"
    assert (kv["Type"], kv["ActiveState"], kv["SubState"]) == ("notify", "active", "running"), res
    assert kv["StatusText"].startswith("listening on"), res
    assert int(proc["Uid"][0]) != 0 and proc["NoNewPrivs"] == ["1"] and proc["Seccomp"] == ["2"], res
    assert int(proc["CapEff"][0], 16) == 0, res
    assert kv["state"] == "quantd 750", res
    assert (kv["health"], kv["dashboard"], kv["job"].split()[0]) == ("ok", "True", "succeeded"), res
    assert "open_to_others" not in kv, res
    m_ = re.search(r"Overall exposure level for quantd.service: ([0-9.]+)", res)
    assert m_ and float(m_.group(1)) <= 2.0, res
    assert kv["after_kill"].startswith("active restarts=1"), res
    assert (kv["stopped_Result"], kv["stopped_ExecMainStatus"], kv["stopped_ActiveState"]) == \
        ("success", "0", "inactive"), res

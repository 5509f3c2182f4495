"""test_install.py: what an operator installs, checked without running it:
`make install` / `make uninstall` under DESTDIR, the systemd unit (verify,
hardening settings, the exposure score of `systemd-analyze security`), the
sysusers.d and tmpfiles.d snippets applied to the DESTDIR tree, both man
pages (lint, and every command, option and configuration key documented),
the example configurations, the logrotate file, and the container recipe
(hadolint's rules checked by reading the file, the entry point with
shellcheck; no container engine runs here).

Tools that a machine may lack (systemd-analyze, systemd-sysusers, mandoc,
groff, man, shellcheck, python3-yaml) make their test skip with the reason;
tests/deps.sh installs them on CI.
"""

import json
import os
import re
import shutil
import stat
import subprocess

import pytest

from conftest import REPO_ROOT, child_env

DEPLOY = os.path.join(REPO_ROOT, "deploy")
UNIT = os.path.join(DEPLOY, "systemd", "smtpvault.service")
MAN8 = os.path.join(DEPLOY, "man", "smtpvault.8")
MAN5 = os.path.join(DEPLOY, "man", "smtpvault.conf.5")
CONTAINERFILE = os.path.join(DEPLOY, "container", "Containerfile")
ENTRYPOINT = os.path.join(DEPLOY, "container", "entrypoint.sh")
COMPOSE = os.path.join(DEPLOY, "container", "compose.yaml")
CONTAINER_CONF = os.path.join(DEPLOY, "container", "smtpvault.conf")
EXAMPLE_CONF = os.path.join(DEPLOY, "smtpvault.conf.example")
LOGROTATE = os.path.join(DEPLOY, "logrotate", "smtpvault")
CONFIG_C = os.path.join(REPO_ROOT, "proxy", "config.c")

MAX_EXPOSURE = 2.0      # issue 7: "exposure score of 2.0 or lower"
TOOL_TIMEOUT = 120

# Every file `make install PREFIX=/usr` puts in place, and its mode.
INSTALLED = {
    "usr/sbin/smtpvault": 0o755,
    "usr/share/man/man8/smtpvault.8": 0o644,
    "usr/share/man/man5/smtpvault.conf.5": 0o644,
    "usr/lib/systemd/system/smtpvault.service": 0o644,
    "usr/lib/sysusers.d/smtpvault.conf": 0o644,
    "usr/lib/tmpfiles.d/smtpvault.conf": 0o644,
    "etc/logrotate.d/smtpvault": 0o644,
    "usr/share/doc/smtpvault/smtpvault.conf.example": 0o644,
}


def need(tool):
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (tests/deps.sh installs it)")
    return path


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def run(argv, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", TOOL_TIMEOUT)
    return subprocess.run(argv, **kw)


def make(destdir, target, smtpvault_bin):
    """make TARGET into destdir, with the binary under test (never rebuilt:
    -o keeps an ASan build an ASan build)."""
    build = os.path.dirname(smtpvault_bin)
    p = run(["make", "--no-print-directory", "-C", REPO_ROOT, "-o", f"{build}/smtpvault",
             f"BUILD={build}", f"DESTDIR={destdir}", "PREFIX=/usr", target])
    assert p.returncode == 0, f"make {target} failed:\n{p.stdout}{p.stderr}"


@pytest.fixture
def installed(tmp_path, smtpvault_bin):
    dest = str(tmp_path / "dest")
    make(dest, "install", smtpvault_bin)
    return dest


def unit_settings(text):
    """[Section] -> list of (key, value), comments and blank lines skipped."""
    out, section = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out.setdefault(section, [])
            continue
        key, _, value = line.partition("=")
        out[section].append((key.strip(), value.strip()))
    return out


def config_keys():
    """(section, key) for every row of config_keys[] in proxy/config.c."""
    rows = re.findall(r'\{\s*SEC_([A-Z]+),\s*"([a-z_]+)"', read(CONFIG_C))
    assert len(rows) > 20, "config.c's key table not found"
    return [(sec.lower(), key) for sec, key in rows]


# ---- make install / uninstall --------------------------------------------

def test_make_install_tree_and_modes(installed):
    for rel, mode in INSTALLED.items():
        path = os.path.join(installed, rel)
        assert os.path.isfile(path), f"make install did not install {rel}"
        got = stat.S_IMODE(os.stat(path).st_mode)
        assert got == mode, f"{rel} has mode {oct(got)}, expected {oct(mode)}"
    found = set()
    for root, _dirs, files in os.walk(installed):
        for name in files:
            found.add(os.path.relpath(os.path.join(root, name), installed))
    assert found == set(INSTALLED), f"unexpected files installed: {found - set(INSTALLED)}"
    # The unit names the installed binary; the man pages and snippets are ours.
    unit = read(os.path.join(installed, "usr/lib/systemd/system/smtpvault.service"))
    assert "ExecStart=/usr/sbin/smtpvault serve" in unit
    assert read(os.path.join(installed, "usr/share/man/man8/smtpvault.8")) == read(MAN8)


def test_make_install_prefix_rewrites_unit(tmp_path, smtpvault_bin):
    dest = str(tmp_path / "dest")
    build = os.path.dirname(smtpvault_bin)
    p = run(["make", "--no-print-directory", "-C", REPO_ROOT, "-o", f"{build}/smtpvault",
             f"BUILD={build}", f"DESTDIR={dest}", "PREFIX=/usr/local", "install"])
    assert p.returncode == 0, p.stdout + p.stderr
    unit = read(os.path.join(dest, "usr/local/lib/systemd/system/smtpvault.service"))
    assert "ExecStart=/usr/local/sbin/smtpvault serve" in unit
    assert "/usr/sbin/smtpvault" not in unit
    # logrotate reads /etc/logrotate.d only, whatever the prefix.
    assert os.path.isfile(os.path.join(dest, "etc/logrotate.d/smtpvault"))


def test_make_uninstall_removes_everything(installed, smtpvault_bin):
    make(installed, "uninstall", smtpvault_bin)
    left = [rel for rel in INSTALLED if os.path.lexists(os.path.join(installed, rel))]
    assert left == [], f"make uninstall left {left}"
    assert not os.path.exists(os.path.join(installed, "usr/share/doc/smtpvault"))


# ---- systemd ---------------------------------------------------------------

def test_unit_settings():
    s = unit_settings(read(UNIT))
    svc = dict(s["Service"])
    required = {
        "Type": "notify", "User": "smtpvault", "Group": "smtpvault", "DynamicUser": "no",
        "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
        "PrivateDevices": "yes", "NoNewPrivileges": "yes", "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "SystemCallArchitectures": "native", "MemoryDenyWriteExecute": "yes",
        "LockPersonality": "yes", "RestrictRealtime": "yes", "RestrictSUIDSGID": "yes",
        "RestrictNamespaces": "yes", "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes", "ProtectClock": "yes", "ProtectHostname": "yes",
        "ProtectProc": "invisible", "ProcSubset": "pid", "UMask": "0077",
        "StateDirectory": "smtpvault", "ExecReload": "/bin/kill -HUP $MAINPID",
    }
    for key, value in required.items():
        assert svc.get(key) == value, f"[Service] {key}={svc.get(key)!r}, expected {value!r}"
    filters = [v for k, v in s["Service"] if k == "SystemCallFilter"]
    assert "@system-service" in filters
    assert "WatchdogSec" in svc
    rw = svc["ReadWritePaths"].split()
    assert rw == ["/var/lib/smtpvault", "/var/spool/smtpvault"]
    # The passphrase is a credential: never in the unit or the environment.
    assert svc["LoadCredential"] == "smtpvault-passphrase:/etc/smtpvault/passphrase"
    assert not any(k in ("Environment", "EnvironmentFile", "PassEnvironment")
                   for k, _ in s["Service"])
    assert "AmbientCapabilities" not in svc or svc["AmbientCapabilities"] == ""


def test_systemd_analyze_verify(installed):
    """verify against the DESTDIR-installed unit, with ExecStart pointing at
    the installed binary and MANPATH at the installed man pages, so that
    every check runs (binary exists, Documentation= man pages resolve)."""
    tool = need("systemd-analyze")
    unit = read(os.path.join(installed, "usr/lib/systemd/system/smtpvault.service"))
    unit = unit.replace("/usr/sbin/smtpvault", os.path.join(installed, "usr/sbin/smtpvault"))
    path = os.path.join(installed, "smtpvault.service")
    with open(path, "w") as f:
        f.write(unit)
    env = dict(os.environ, MANPATH=os.path.join(installed, "usr/share/man"),
               SYSTEMD_LOG_LEVEL="notice")
    p = run([tool, "verify", path], env=env)
    assert p.returncode == 0 and p.stdout + p.stderr == "", \
        f"systemd-analyze verify:\n{p.stdout}{p.stderr}"


def test_systemd_analyze_security_exposure(capsys):
    tool = need("systemd-analyze")
    p = run([tool, "security", "--offline=yes", "--no-pager", UNIT])
    if "--offline" in p.stderr and "unrecognized" in p.stderr:
        pytest.skip("this systemd-analyze has no --offline (systemd 252 or later needed)")
    m = re.search(r"Overall exposure level for smtpvault\.service:\s*([0-9.]+)\s*(\w+)",
                  p.stdout)
    assert m, f"no exposure level in the output:\n{p.stdout}{p.stderr}"
    score = float(m.group(1))
    with capsys.disabled():
        print(f"\n[systemd-analyze security] smtpvault.service exposure {score} {m.group(2)}")
    assert score <= MAX_EXPOSURE, f"exposure {score} > {MAX_EXPOSURE}:\n{p.stdout}"


def test_sysusers_and_tmpfiles_create_user_and_dirs(installed):
    """The snippets, applied to the DESTDIR tree as a root file system: the
    user exists and the state and spool directories are 0700 and its."""
    sysusers = need("systemd-sysusers")
    tmpfiles = need("systemd-tmpfiles")
    p = run([sysusers, f"--root={installed}"])
    assert p.returncode == 0, p.stderr
    passwd = read(os.path.join(installed, "etc/passwd"))
    m = re.search(r"^smtpvault:x:(\d+):(\d+):[^:]*:/var/lib/smtpvault:/usr/sbin/nologin$",
                  passwd, re.M)
    assert m, passwd
    uid, gid = int(m.group(1)), int(m.group(2))
    assert 0 < uid < 1000, f"smtpvault should be a system user, got uid {uid}"
    p = run([tmpfiles, f"--root={installed}", "--create", "smtpvault.conf"])
    assert p.returncode == 0, p.stderr
    for d in ("var/lib/smtpvault", "var/spool/smtpvault"):
        st = os.stat(os.path.join(installed, d))
        assert stat.S_IMODE(st.st_mode) == 0o700, d
        assert (st.st_uid, st.st_gid) == (uid, gid), d


# ---- man pages ---------------------------------------------------------------

@pytest.mark.parametrize("page", [MAN8, MAN5], ids=["smtpvault.8", "smtpvault.conf.5"])
def test_man_page_mandoc_lint(page):
    mandoc = need("mandoc")
    # -W warning: everything but STYLE notes, which depend on the manuals
    # installed on this machine ("referenced manual not found").
    p = run([mandoc, "-T", "lint", "-W", "warning", page])
    assert p.returncode == 0 and p.stdout + p.stderr == "", p.stdout + p.stderr


@pytest.mark.parametrize("page", [MAN8, MAN5], ids=["smtpvault.8", "smtpvault.conf.5"])
def test_man_page_groff_warnings(page):
    groff = need("groff")
    p = run([groff, "-mandoc", "-ww", "-z", page])
    assert p.returncode == 0 and p.stderr == "", p.stderr
    if shutil.which("man"):
        p = run(["man", "--warnings", "-l", page],
                env=dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", MANPAGER="cat",
                         PAGER="cat"))
        assert p.returncode == 0 and p.stderr == "", p.stderr


def test_man8_documents_every_command_and_option():
    page = read(MAN8)
    main_c = read(os.path.join(REPO_ROOT, "proxy", "main.c"))
    commands = re.findall(r'\{\s*"([a-z-]+)",\s*cmd_\w+,', main_c)
    assert "serve" in commands
    # The SPEC's command list, including those another module provides.
    for cmd in set(commands) | {"queue"}:
        assert re.search(rf"^\.It (Xo\n\.)?Cm {re.escape(cmd)}\b", page, re.M), \
            f"smtpvault(8) does not document the command {cmd}"
    for cmd, subs in (("account", ("add", "list", "rotate", "rollback", "remove", "test")),
                      ("admin-user", ("add", "remove", "list")),
                      ("audit", ("verify", "show")),
                      ("queue", ("list", "retry", "delete"))):
        for sub in subs:
            assert re.search(rf"^\.(It )?Cm {cmd} {sub}\b", page, re.M), \
                f"smtpvault(8) does not document {cmd} {sub}"
    options = set()
    for name in os.listdir(os.path.join(REPO_ROOT, "proxy")):
        if name.endswith(".c"):
            options |= set(re.findall(r'\{\s*"([a-z][a-z-]+)",\s*(?:no|required|optional)_argument',
                                      read(os.path.join(REPO_ROOT, "proxy", name))))
    assert {"passphrase-file", "kdf", "alias", "json"} <= options
    for opt in sorted(options):
        assert f"Fl -{opt}" in page, f"smtpvault(8) does not document --{opt}"
    for heading in ("EXIT STATUS", "SIGNALS", "FILES", "EXAMPLES", "ENVIRONMENT",
                    "VAULT KEY SOURCES"):
        assert f"\n.Sh {heading}\n" in page, f"smtpvault(8) has no {heading} section"
    for sig in ("SIGTERM", "SIGHUP", "SIGINT"):
        assert sig in page


def test_man5_documents_every_key_with_default():
    page = read(MAN5)
    sections = re.split(r"^\.Sh ", page, flags=re.M)
    by_section = {}
    for chunk in sections:
        m = re.match(r"THE \[(\w+)", chunk)
        if m:
            by_section[m.group(1)] = chunk
    for sec, key in config_keys():
        assert sec in by_section, f"smtpvault.conf(5) has no [{sec}] section"
        chunk = by_section[sec]
        m = re.search(rf"^\.It (?:.* )?Ic {key}\b(.*?)(?=^\.It Ic |^\.El)", chunk, re.M | re.S)
        assert m, f"smtpvault.conf(5) does not document [{sec}] {key}"
        if sec != "client":
            assert re.search(r"[Dd]efault", m.group(1)), f"[{sec}] {key}: no default stated"


def test_example_configs_list_every_key():
    for path in (EXAMPLE_CONF,):
        text = read(path)
        section = None
        seen = set()
        for line in text.splitlines():
            line = line.strip().lstrip("#").strip()
            m = re.match(r'^\[(\w+)', line)
            if m:
                section = m.group(1)
                continue
            m = re.match(r"^([a-z_]+)\s*=", line)
            if m and section:
                seen.add((section, m.group(1)))
        missing = [f"[{s}] {k}" for s, k in config_keys() if (s, k) not in seen]
        assert missing == [], f"{path} does not show {missing}"


@pytest.mark.parametrize("path", [EXAMPLE_CONF, CONTAINER_CONF],
                         ids=["smtpvault.conf.example", "container"])
def test_example_configs_parse(path, smtpvault_bin):
    """The shipped configurations are valid: `serve --check` may fail on
    the missing vault or on this build's features, never on a line."""
    p = run([smtpvault_bin, "-c", path, "serve", "--check"], env=child_env(),
            stdin=subprocess.DEVNULL)
    assert not re.search(re.escape(os.path.basename(path)) + r":\d+:", p.stderr), p.stderr


# ---- logrotate ---------------------------------------------------------------

def test_logrotate_file_rotates_only_the_audit_log():
    text = read(LOGROTATE)
    body = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#"))
    targets = re.findall(r"^(\S+)\s*\{", body, re.M)
    assert targets == ["/var/lib/smtpvault/audit.log"], targets
    assert not re.search(r"[*?\[]", targets[0]), "a glob would also match audit.log.head"
    for directive in ("delaycompress", "compress", "missingok", "notifempty",
                      "create 0600 smtpvault smtpvault", "su smtpvault smtpvault"):
        assert re.search(rf"^\s*{directive}\s*$", body, re.M), f"missing: {directive}"
    assert "copytruncate" not in body, "copytruncate loses lines; the daemon reopens"
    post = re.search(r"postrotate\n(.*?)\n\s*endscript", body, re.S)
    assert post and "reload smtpvault.service" in post.group(1)


def test_logrotate_config_syntax(tmp_path):
    logrotate = need("logrotate")
    # The real file, with the user and path it names mapped to what exists here.
    conf = read(LOGROTATE).replace("/var/lib/smtpvault", str(tmp_path))
    conf = conf.replace("smtpvault smtpvault", "root root")
    (tmp_path / "audit.log").write_text("{}\n")
    path = tmp_path / "logrotate.conf"
    path.write_text(conf)
    path.chmod(0o644)
    p = run([logrotate, "-d", "-s", str(tmp_path / "state"), str(path)])
    assert p.returncode == 0, p.stderr
    assert "error" not in p.stderr.lower(), p.stderr


# ---- container ---------------------------------------------------------------

def containerfile_instructions():
    """(INSTRUCTION, arguments) with continuation lines joined."""
    out, buf = [], ""
    for line in read(CONTAINERFILE).splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def test_containerfile_hadolint_rules_by_inspection():
    """What hadolint checks, read from the file: base images pinned by tag
    (DL3006/DL3007), apt-get update and install in one RUN with
    --no-install-recommends and the lists removed (DL3009/DL3015), no ADD
    (DL3020), a non-root USER last (DL3002), exec-form ENTRYPOINT and CMD
    (DL3025), a HEALTHCHECK. Package versions are not pinned (DL3008) on
    purpose: Debian 12's point releases carry the security fixes."""
    ins = containerfile_instructions()
    froms = [a for i, a in ins if i == "FROM"]
    assert len(froms) == 2, "multi-stage: a build stage and a runtime stage"
    for f in froms:
        image = f.split()[0]
        assert re.match(r"^docker\.io/library/debian:12-slim$", image), image
    assert froms[0].split()[-1] == "build" and " AS " in froms[0].upper()
    for i, a in ins:
        assert i != "ADD", "use COPY, never ADD"
        assert i != "MAINTAINER"
        if i == "RUN" and "apt-get install" in a:
            assert "apt-get update" in a, "update and install in the same RUN"
            assert "--no-install-recommends" in a
            assert "-y" in a.split()
            assert "rm -rf /var/lib/apt/lists/*" in a
        if i in ("ENTRYPOINT", "CMD"):
            assert isinstance(json.loads(a), list), f"{i} must be exec form"
    runtime = ins[[n for n, (i, _) in enumerate(ins) if i == "FROM"][1]:]
    users = [a for i, a in runtime if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "non-root USER"
    health = [a for i, a in runtime if i == "HEALTHCHECK"]
    assert health and "http://127.0.0.1:8025/healthz" in health[0]
    assert json.loads(health[0][health[0].index("CMD") + 3:].strip())[0] == "curl"
    volumes = json.loads([a for i, a in runtime if i == "VOLUME"][0])
    assert volumes == ["/var/lib/smtpvault", "/var/spool/smtpvault"]
    env = " ".join(a for i, a in runtime if i == "ENV")
    assert "CREDENTIALS_DIRECTORY=/run/secrets" in env
    installs = [a for i, a in runtime if i == "RUN" and "apt-get install" in a]
    assert not re.search(r"\S+-dev\b", " ".join(installs)), "no -dev packages at run time"
    assert not re.search(r"build-essential|gcc|make\b", " ".join(installs))


def apt_packages(run_args):
    m = re.search(r"apt-get install (.*?)(?:&&|$)", run_args)
    return {w for w in m.group(1).split() if not w.startswith("-")}


def dpkg_owner(path):
    p = run(["dpkg", "-S", os.path.realpath(path)])
    if p.returncode != 0:
        p = run(["dpkg", "-S", path])
    if p.returncode != 0:
        return None
    return p.stdout.split(":")[0].strip()


def dpkg_depends(pkgs):
    """pkgs and everything they depend on, as installed here."""
    seen, todo = set(), list(pkgs)
    while todo:
        pkg = todo.pop()
        if pkg in seen:
            continue
        seen.add(pkg)
        p = run(["dpkg-query", "-W", "-f=${Depends}, ${Pre-Depends}", pkg])
        for dep in re.split(r"[,|]", p.stdout):
            words = dep.split()
            if words:
                todo.append(words[0].split(":")[0])
    return seen


def test_containerfile_packages_cover_the_build(smtpvault_bin):
    """Every library the binary links is in the runtime stage (or a
    dependency of one there), and every pkg-config module of the Makefile
    comes from a package of the build stage."""
    if shutil.which("dpkg") is None or shutil.which("ldd") is None:
        pytest.skip("needs dpkg and ldd (Debian)")
    ins = containerfile_instructions()
    runs = [a for i, a in ins if i == "RUN" and "apt-get install" in a]
    build_pkgs, runtime_pkgs = apt_packages(runs[0]), apt_packages(runs[1])
    covered = dpkg_depends(runtime_pkgs) | {"libc6"}
    p = run(["ldd", smtpvault_bin])
    libs = re.findall(r"=>\s*(/\S+)", p.stdout)
    assert libs, p.stdout
    for lib in libs:
        if "libasan" in lib or "libubsan" in lib or "clang" in lib:
            continue        # an ASan build's runtime, not the product's
        owner = dpkg_owner(lib)
        assert owner is not None, f"no package owns {lib}"
        owner = owner.split(",")[0]
        assert owner.split(":")[0] in covered, \
            f"{lib} comes from {owner}, which the runtime stage does not install"
    makefile = read(os.path.join(REPO_ROOT, "Makefile"))
    modules = re.search(r"^PKGS\s*:=\s*(.*)$", makefile, re.M).group(1).split()
    build_covered = dpkg_depends(build_pkgs)
    for mod in modules:
        p = run(["pkg-config", "--variable=pcfiledir", mod])
        assert p.returncode == 0, f"pkg-config does not know {mod}"
        owner = dpkg_owner(os.path.join(p.stdout.strip(), f"{mod}.pc"))
        assert owner and owner.split(":")[0] in build_covered, \
            f"pkg-config module {mod} ({owner}) is not installed by the build stage"


def test_entrypoint_shellcheck():
    shellcheck = need("shellcheck")
    p = run([shellcheck, "-s", "sh", ENTRYPOINT])
    assert p.returncode == 0, p.stdout + p.stderr
    with open(ENTRYPOINT) as f:
        assert f.readline() == "#!/bin/sh\n"
    assert os.stat(ENTRYPOINT).st_mode & stat.S_IXUSR, "entrypoint.sh must be executable"


def test_entrypoint_behaviour(tmp_path, smtpvault_bin):
    env = dict(child_env(), SMTPVAULT_BIN=smtpvault_bin,
               SMTPVAULT_CONFIG=str(tmp_path / "missing.conf"),
               CREDENTIALS_DIRECTORY=str(tmp_path))
    p = run(["/bin/sh", ENTRYPOINT, "--version"], env=env)
    assert p.returncode == 0 and p.stdout.startswith("smtpvault "), p.stdout + p.stderr
    p = run(["/bin/sh", ENTRYPOINT], env=env)
    assert p.returncode == 2
    assert "cannot read the configuration" in p.stderr and str(tmp_path) in p.stderr


def test_compose_example():
    yaml = pytest.importorskip("yaml", reason="python3-yaml is not installed")
    with open(COMPOSE) as f:
        doc = yaml.safe_load(f)
    svc = doc["services"]["smtpvault"]
    assert svc["build"]["dockerfile"] == "deploy/container/Containerfile"
    assert "smtpvault-passphrase" in svc["secrets"]
    assert doc["secrets"]["smtpvault-passphrase"]["file"]
    mounts = {v.split(":")[1] for v in svc["volumes"]}
    assert {"/var/lib/smtpvault", "/var/spool/smtpvault"} <= mounts
    assert "127.0.0.1:8025:8025" in svc["ports"], "the admin page stays on loopback"
    assert svc.get("privileged") is not True and svc["cap_drop"] == ["ALL"]
    assert svc["read_only"] is True
    assert "environment" not in svc or not any("PASS" in str(e).upper()
                                               for e in svc["environment"])

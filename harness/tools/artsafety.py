"""What an imported shell command does, judged conservatively: every command word must be
known, every path it writes must be a new, literal path under a scratch directory, and
nothing may reach the network, load kernel code, signal or enter other processes, change
accounts, services, the firewall or the audit system. Anything else is refused with the
reason. Used by ``harness.tools.art``; pure (never runs anything)."""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass, field

SCRATCH = ("/tmp/", "/var/tmp/", "/dev/shm/")  # noqa: S108 - the paths vetted writes may use, not used here
_DEVICES = {"/dev/null", "/dev/stdout", "/dev/stderr", "/dev/tty", "/dev/zero"}

_DENY: dict[str, str] = {}
for _names, _why in [
    ("curl wget fetch aria2c axel lwp-download invoke-webrequest iwr certutil tftp ftp git svn "
     "bitsadmin", "downloads from the network"),
    ("nc ncat netcat socat telnet ssh scp sftp rsync sshpass nmap masscan ping ping6 dig "
     "nslookup host traceroute hping3 arping tcpdump tshark openssl",
     "reaches the network (only loopback or namespaces the run made are allowed)"),
    ("apt apt-get aptitude dpkg yum dnf rpm apk zypper pip pip3 npm gem go cargo snap flatpak make",
     "installs or builds software"),
    ("gcc cc clang g++ as ld", "compiles code the importer cannot inspect"),
    ("insmod modprobe rmmod kmod depmod", "loads or unloads kernel modules"),
    ("shutdown reboot halt poweroff init telinit", "shuts down or reboots the node"),
    ("systemctl service update-rc.d chkconfig initctl", "changes system services"),
    ("kill pkill killall skill", "signals processes the run did not start (possibly the machine's PID 1)"),
    ("nsenter unshare chroot", "enters or creates namespaces (possibly PID 1's)"),
    ("gdb strace ltrace", "attaches to other processes"),
    ("mount umount swapoff swapon losetup mkfs fdisk parted wipefs mkswap sfdisk",
     "changes mounts or block devices"),
    ("useradd userdel usermod adduser deluser passwd chpasswd chage groupadd groupdel groupmod "
     "gpasswd vipw visudo newusers", "changes accounts (/etc/passwd, /etc/shadow, /etc/group)"),
    ("iptables ip6tables iptables-save iptables-restore nft ufw firewall-cmd ebtables",
     "changes the firewall"),
    ("auditctl augenrules auditd setenforce setsebool aa-disable aa-complain apparmor_parser",
     "changes the audit system or security policy the sensors rely on"),
    ("crontab at batch atrm", "changes scheduled jobs"),
    ("sudo su doas pkexec runuser", "changes identity (the atomic already runs as the harness's "
     "user; mark it elevation_required instead)"),
    ("eval exec source . sh bash dash zsh ksh csh tcsh fish python python2 python3 perl ruby php "
     "node lua osascript xargs busybox expect script",
     "runs code the importer cannot inspect"),
    ("docker podman kubectl crictl ctr runc containerd nerdctl", "drives a container runtime"),
    ("hostnamectl timedatectl hwclock localectl loginctl", "changes node settings"),
    ("yes", "runs until killed"),
    ("nohup setsid disown daemon", "leaves a process running after the atomic"),
    ("gpg gpg2", "writes the user's keyring (~/.gnupg)"),
    ("unzip split csplit", "writes files the importer cannot name in advance"),
]:
    for _n in _names.split():
        _DENY[_n] = _why

_READ_ONLY_WORDS = (
    "cat head tail grep egrep fgrep zgrep ls id whoami who w last lastlog lastb groups users "
    "uname ps pstree printenv echo printf pwd true false test [ [[ ]] ]] sleep wc sort uniq cut tr "
    "base64 xxd od hexdump file stat df du lsmod lsof ss netstat getent sha1sum sha256sum "
    "sha512sum md5sum cksum readlink realpath basename dirname strings which type whereis "
    "history export unset set read cd local shift lscpu lspci lsusb lsblk free vmstat "
    "paste join column tac rev nl fold fmt comm diff cmp seq expr getcap lsattr "
    "systemd-detect-virt virt-what dmidecode env uptime hostname date dmesg journalctl ip "
    "ifconfig arp route awk sed find mktemp tty locale getconf nproc arch logname tree "
    "jq zcat bzcat xzcat"
)
_READ_ONLY = set(_READ_ONLY_WORDS.split())
_WRITERS = {"touch", "mkdir", "rm", "rmdir", "unlink", "shred", "truncate", "cp", "mv", "ln", "tee",
            "chmod", "chown", "chgrp", "chattr", "setcap", "dd", "install", "tar", "gzip", "gunzip",
            "bzip2", "xz", "zip"}
_WRAPPERS = {"command", "builtin", "nice", "time", "stdbuf", "!"}
_KEYWORDS = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "{", "}", "(", ")"}
_SKIP_STATEMENT = {"for", "case", "esac", "select", "function", "in"}
_SEPARATORS = {";", "&&", "||", "|", "\n", ";;", "(", ")", "|&"}
_REDIRECTS = {">", ">>", ">|", "&>", "&>>", "<>"}
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://")
_IPV4 = re.compile(r"(?<![\d.])(\d{1,3})\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\d.])")
_SUBST = re.compile(r"\$\(([^()]*)\)|`([^`]*)`")


class Unsafe(Exception):
    """The command cannot be made safe automatically; ``str(exc)`` says why."""


@dataclass
class Effects:
    """What a command does to the node, as far as the importer can tell."""
    writes: list[str] = field(default_factory=list)     # absolute scratch paths
    removes: list[str] = field(default_factory=list)
    reads: list[str] = field(default_factory=list)      # absolute paths named
    commands: list[str] = field(default_factory=list)   # command words run

    def merge(self, other: Effects) -> None:
        for name in ("writes", "removes", "reads", "commands"):
            mine = getattr(self, name)
            mine += [x for x in getattr(other, name) if x not in mine]


def analyse(text: str) -> Effects:
    """Effects of a shell script; raises Unsafe with the reason for anything unsafe."""
    if "<<" in text:
        raise Unsafe("uses a here-document, which the importer does not parse")
    if m := _URL.search(text):
        raise Unsafe(f"names a URL ({m.group(0)}...): downloads or network access are refused")
    for m in _IPV4.finditer(text):
        if m.group(1) != "127":
            raise Unsafe(f"names the non-loopback address {m.group(0)}: network traffic is only "
                         "allowed to 127.0.0.0/8")
    if re.search(r"/dev/(tcp|udp)/", text):
        raise Unsafe("opens a network socket through /dev/tcp or /dev/udp")
    if re.search(r"/proc/1(/|\b)", text):
        raise Unsafe("touches /proc/1 (the machine's PID 1 must never be touched)")
    if re.search(r"PathToAtomicsFolder|\$PathToPayloads|PathToPayloads", text):
        raise Unsafe("needs payload files from Atomic Red Team's atomics folder, which the "
                     "importer does not copy")
    effects = Effects()
    inner: list[str] = []

    def hide(m: re.Match[str]) -> str:
        inner.append(m.group(1) if m.group(1) is not None else m.group(2))
        return "$SUBST"

    flat = _SUBST.sub(hide, text.replace("\\\n", " "))
    if "$(" in flat or "`" in flat:
        raise Unsafe("uses nested command substitution, which the importer does not parse")
    for sub in inner:
        effects.merge(analyse(sub))
    for line in flat.splitlines():  # a newline ends a command; quotes may not span lines
        try:
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            tokens = list(lexer)
        except ValueError as exc:
            raise Unsafe(f"cannot be tokenised as a shell command ({exc}): {line.strip()!r}") from exc
        for words in _statements(tokens):
            _one(words, effects)
    return effects


def _statements(tokens: list[str]) -> list[list[str]]:
    out: list[list[str]] = [[]]
    for tok in tokens:
        if tok == "&" or (tok.endswith("&") and tok not in ("&&", ">&", "|&", "&>")):
            raise Unsafe("starts a background process (&) the cleanup cannot stop")
        if tok in _SEPARATORS or set(tok) <= set(";|\n"):
            out.append([])
        else:
            out[-1].append(tok)
    return [s for s in out if s]


def _one(words: list[str], effects: Effects) -> None:  # noqa: PLR0912 - one branch per shell form
    args: list[str] = []
    i = 0
    while i < len(words):
        tok = words[i]
        if tok in _REDIRECTS or tok == "<":
            if i + 1 >= len(words):
                raise Unsafe(f"redirection {tok!r} without a target")
            target = words[i + 1]
            if tok == "<":
                _note_read(target, effects)
            else:
                _check_write(target, effects, "redirects output to")
            i += 2
            continue
        if tok in (">&", "<&"):
            i += 2
            continue
        if tok.isdigit() and i + 1 < len(words) and words[i + 1] in {*_REDIRECTS, "<", ">&", "<&"}:
            i += 1
            continue
        args.append(tok)
        i += 1
    while args and (args[0] in _KEYWORDS or re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", args[0])):
        args = args[1:]
    if args[:1] == ["command"] and args[1:2] in (["-v"], ["-V"]):
        return  # command -v NAME: asks whether NAME exists
    while args and args[0] in _WRAPPERS:
        args = args[1:]
    if not args or args[0] in _SKIP_STATEMENT:
        return
    name = posixpath.basename(args[0]).lower()
    rest = args[1:]
    if "$" in args[0]:
        raise Unsafe(f"runs a command named by a variable ({args[0]}): the importer cannot tell what it is")
    if name in _DENY or name.startswith("mkfs"):
        raise Unsafe(f"{name}: {_DENY.get(name, 'formats a file system')}")
    effects.commands += [name] if name not in effects.commands else []
    if name in _WRITERS:
        _writer(name, rest, effects)
    elif name in _READ_ONLY:
        _reader(name, rest, effects)
    else:
        raise Unsafe(f"{name}: not a command the importer knows to be safe (it accepts read-only "
                     "commands and file writes under /tmp, /var/tmp, /dev/shm)")


def _reader(name: str, rest: list[str], effects: Effects) -> None:
    refuse = {
        "hostname": (bool([a for a in rest if not a.startswith("-")]), "sets the host name"),
        "date": (any(a in ("-s", "--set") or a.startswith("--set=") for a in rest), "sets the clock"),
        "dmesg": (any(a in ("-c", "-C", "-D", "-E", "-n", "--clear", "--read-clear") for a in rest),
                  "clears or reconfigures the kernel log"),
        "journalctl": (any(a.startswith(("--vacuum", "--rotate", "--flush", "--relinquish"))
                           for a in rest), "changes the journal"),
        "ip": (any(a in ("set", "add", "del", "delete", "flush", "change", "replace", "append")
                   for a in rest), "changes network configuration"),
        "ifconfig": (len([a for a in rest if a != "-a"]) > 1, "changes network configuration"),
        "route": (any(a in ("add", "del") for a in rest), "changes routes"),
        "arp": (any(a in ("-s", "-d", "--set", "--delete") for a in rest), "changes the ARP table"),
        "find": (any(a in ("-delete", "-exec", "-execdir", "-ok", "-okdir", "-fprint", "-fprintf",
                           "-fls", "-fprint0") for a in rest), "find runs commands or deletes/writes files"),
        "sed": (any(a.startswith("-i") or a.startswith("--in-place") for a in rest)
                or any(re.search(r"(^|[;{}\s])[wWe]\s", a) for a in rest),
                "sed edits files in place or runs commands"),
        "awk": (any(re.search(r"system|getline|\|\s*\"|>\s*\"", a) for a in rest),
                "the awk program runs commands or writes files"),
        "mktemp": (True, "creates a file whose name the importer cannot know, so cannot clean it up"),
        "env": (bool(rest), "runs a command with a changed environment"),
    }
    bad, why = refuse.get(name, (False, ""))
    if bad:
        raise Unsafe(f"{name} {' '.join(rest)}: {why}".replace("  ", " "))
    for a in rest:
        _note_read(a, effects)


def _note_read(arg: str, effects: Effects) -> None:
    if arg.startswith("/") and arg not in _DEVICES and arg not in effects.reads:
        effects.reads.append(arg)


def _operands(rest: list[str], with_value: tuple[str, ...] = ()) -> list[str]:
    out: list[str] = []
    skip = False
    for a in rest:
        if skip:
            skip = False
        elif a in with_value:
            skip = True
        elif not a.startswith("-") or a == "-":
            out.append(a)
    return out


def _writer(name: str, rest: list[str], effects: Effects) -> None:  # noqa: PLR0912 - a table of commands
    ops = _operands(rest, ("-m", "--mode", "-s", "--size", "-t", "-o", "-g", "-C"))
    targets: list[str]
    removes = False
    if name in ("touch", "mkdir", "tee"):
        targets = ops
    elif name in ("rm", "rmdir", "unlink", "shred", "truncate"):
        targets, removes = ops, name != "truncate"
    elif name in ("cp", "ln", "install"):
        targets = ops[-1:]
        for a in ops[:-1]:
            _note_read(a, effects)
    elif name == "mv":
        targets = ops[-1:]
        for a in ops[:-1]:
            _check_write(a, effects, "mv removes", remove=True)
    elif name in ("chmod", "chown", "chgrp", "chattr", "setcap"):
        targets = ops[1:]
    elif name == "dd":
        targets = [a[3:] for a in rest if a.startswith("of=")]
        for a in rest:
            if a.startswith("if="):
                _note_read(a[3:], effects)
    elif name in ("gzip", "gunzip", "bzip2", "xz"):
        if any(a in ("-c", "--stdout", "-l", "--list", "-t", "--test") for a in rest):
            targets = []
        else:
            targets = ops + [o + ".gz" for o in ops if name == "gzip"]
    elif name == "zip":
        targets = ops[:1]
        for a in ops[1:]:
            _note_read(a, effects)
    else:  # tar
        targets = _tar_targets(rest, effects)
    if not targets and name not in ("gzip", "gunzip", "bzip2", "xz", "tar"):
        raise Unsafe(f"{name}: cannot tell which file it changes")
    for t in targets:
        _check_write(t, effects, f"{name} changes", remove=removes)


def _tar_targets(rest: list[str], effects: Effects) -> list[str]:
    flags = rest[0].lstrip("-") if rest else ""
    if "x" in flags or any(a in ("-x", "--extract", "--get") for a in rest):
        raise Unsafe("tar extracts an archive: the importer cannot name the files it writes")
    if "t" in flags or "--list" in rest:
        return []
    target: list[str] = []
    for i, a in enumerate(rest):
        names_file = a == "-f" or (i == 0 and "f" in flags) or (a.startswith("-") and a.endswith("f"))
        if names_file and i + 1 < len(rest):
            target = [rest[i + 1]]
            break
    if not target:
        raise Unsafe("tar: cannot tell which archive it writes (no -f)")
    for a in rest:
        if a.startswith("/") and a not in target:
            _note_read(a, effects)
    return target


def _check_write(target: str, effects: Effects, verb: str, remove: bool = False) -> None:
    if target in _DEVICES or re.fullmatch(r"/dev/fd/\d+|&\d|&-", target):
        return
    if any(c in target for c in "$*?[]{}~`") or not target.startswith("/"):
        raise Unsafe(f"{verb} {target!r}: only literal absolute paths under "
                     f"{', '.join(s.rstrip('/') for s in SCRATCH)} can be vetted "
                     "(no variables, globs, ~ or relative paths)")
    path = posixpath.normpath(target)
    if not any(path.startswith(root) and len(path) > len(root) for root in SCRATCH):
        raise Unsafe(f"{verb} {path}, outside the run-owned scratch paths "
                     f"({', '.join(s.rstrip('/') for s in SCRATCH)}): existing system files "
                     "must never be modified")
    (effects.removes if remove else effects.writes).append(path)


def scratch_root(path: str) -> str:
    """The first component under its scratch directory: ``/tmp/a/b`` -> ``/tmp/a``."""
    for root in SCRATCH:
        if path.startswith(root):
            return root + path[len(root):].split("/", 1)[0]
    raise ValueError(path)


def quote(path: str) -> str:
    return shlex.quote(path)

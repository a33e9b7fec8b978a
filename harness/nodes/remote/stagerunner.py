"""Stage runner: runs an atomic's stages inside a context, one JSON line per request.

Stdlib only, standalone: it is copied to and started on the node (as PID 1 of a
private PID namespace in the namespace context), so it must not import harness.

Protocol (stdin -> stdout, JSON lines):
  started:          {"ready": true, "pid": ..., "pidns": "...", "mntns": "...", "hostname": ...}
  {"stage": N, "argv": [...], "env": {...}, "timeout": s}
                 -> {"stage": N, "exit_code": c, "stdout": ..., "stderr": ..., "pid": p,
                     "started_at": t0, "ended_at": t1, "error": null}
  {"on_exit": [argv...], "env": {...}}  -> {"armed": true}  (run on EOF/SIGTERM if not run)
  {"stage": "cleanup", ...}             -> also disarms on_exit (once it ran)
  {"getpgid": N}  -> {"getpgid": N}: getpgid(N) once on every CPU (a sensor's sync marker,
                     in-process: no interpreter start per marker on a slow VM)
  EOF / SIGTERM: runs the armed on_exit command, then exits.

At start, before its hello, the runner calls getpgid(ANNOUNCE_BASE + scope) once (it
fails: no such pid): a sensor that follows run trees in the kernel (the compiled reference
sensor) starts following this process's tree there, synchronously — with
``filter = "runs"`` it reports only such trees — and counts the events of the tree it had
to drop against ``scope`` (:func:`loss_scope` of the run id), so one run's loss does not
blind another.
"""

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

#: getpgid(ANNOUNCE_BASE + scope): "follow my process tree, its losses are scope's"
#: (harness.sensors.libbpf; above any pid_max, and outside every sensor's marker range)
ANNOUNCE_BASE = 0x5B000000


def loss_scope(run_id: str) -> int:
    """The 16-bit loss scope of a run (0: no run; two concurrent runs share one only by
    chance, and then each counts the other's losses too: never fewer)."""
    if not run_id:
        return 0
    return int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:2], "big") or 1


_armed: dict[str, dict[str, Any]] = {}
_current: dict[str, subprocess.Popen[str]] = {}


def _ns(kind: str) -> str:
    try:
        return os.readlink(f"/proc/self/ns/{kind}")
    except OSError:
        return ""


def _run(req: dict[str, Any], key: str = "proc", signals: bool = False) -> dict[str, Any]:
    """Run one stage (known as ``key`` while it runs). ``signals``: the cleanup run on
    exit, whose SIGTERM/SIGINT are ignored here and get their default back in the command
    (an ignored signal stays ignored across exec)."""
    env = dict(os.environ)
    env.update(req.get("env") or {})
    fds = tuple(int(x) for x in req.get("pass_fds") or ())
    started = time.time()
    try:
        proc = subprocess.Popen(
            req["argv"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, pass_fds=fds, errors="replace",
            start_new_session=True,
            preexec_fn=_default_signals if signals else None,  # noqa: PLW1509 (one thread)
        )
        if not signals:
            _current[key] = proc
    except OSError as exc:
        return {"stage": req["stage"], "exit_code": None, "stdout": "", "stderr": "",
                "pid": None, "started_at": started, "ended_at": time.time(), "error": str(exc)}
    try:
        out, err = proc.communicate(timeout=req.get("timeout") or 30)
        error = None
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        error = f"timed out after {req.get('timeout')} s"
    return {"stage": req["stage"], "exit_code": proc.returncode, "stdout": out[-20000:],
            "stderr": err[-20000:], "pid": proc.pid, "started_at": started,
            "ended_at": time.time(), "error": error}


def _on_exit(*_args: object) -> None:
    """Kill the running stage, run the armed cleanup, exit. Runs once: a second SIGTERM
    (the harness's abort after its parent-death signal, or the other way round) must not
    re-enter and kill the cleanup this call started, so both signals are ignored first."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cleanup = _current.pop("cleanup", None)
    if cleanup is not None:  # the harness's own cleanup stage is running: let it finish
        timeout = float((_armed.get("req") or {}).get("timeout") or 30)
        with contextlib.suppress(subprocess.TimeoutExpired):
            cleanup.wait(timeout)
        if cleanup.returncode == 0:
            _armed.pop("req", None)
    proc = _current.pop("proc", None)
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)  # the interrupted stage and its children
    req = _armed.pop("req", None)
    if req is not None:
        _run(req, signals=True)
    os._exit(0)


def _default_signals() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _getpgid_every_cpu(pid: int) -> None:
    before = os.sched_getaffinity(0)
    try:
        for cpu in sorted(before):
            os.sched_setaffinity(0, {cpu})
            with contextlib.suppress(OSError):
                os.getpgid(pid)
    finally:
        os.sched_setaffinity(0, before)


def main() -> None:
    signal.signal(signal.SIGTERM, _on_exit)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the harness decides; Ctrl-C reaches it first
    with contextlib.suppress(OSError):
        os.getpgid(ANNOUNCE_BASE + loss_scope(os.environ.get("SHADOWTEST_RUN_ID", "")))
    hello = {"ready": True, "pid": os.getpid(), "pidns": _ns("pid"), "mntns": _ns("mnt"),
             "hostname": os.uname().nodename}
    sys.stdout.write(json.dumps(hello) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        req = json.loads(line)
        if "getpgid" in req:
            _getpgid_every_cpu(int(req["getpgid"]))
            reply = {"getpgid": req["getpgid"]}
        elif "on_exit" in req:
            _armed["req"] = {"stage": "cleanup", "argv": req["on_exit"], "env": req.get("env"),
                             "timeout": req.get("timeout", 30)}
            reply = {"armed": True}
        elif req["stage"] == "cleanup":  # disarmed once it ran: a SIGTERM meanwhile waits for it
            reply = _run(req, key="cleanup")
            _armed.pop("req", None)
        else:
            reply = _run(req)
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    _on_exit()


if __name__ == "__main__":
    main()

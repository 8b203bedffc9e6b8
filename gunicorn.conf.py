"""gunicorn settings for Parley's web tier (read from the working directory; the Procfile runs it from here).

Its jobs: refuse to listen beyond loopback while no API token exists, and say at start-up which it is;
let a process hold as many open files as its worker connections need; keep the garbage collector's full
passes rare in a process holding thousands of streams.
"""
import gc
import json
import os
import resource
import traceback


def on_starting(server):
    _raise_open_file_limit(server)
    # The master asks in a child process so that it never imports the app itself: the gevent worker patches
    # the standard library when each worker starts, and a module the master imported before forking (peewee's
    # per-thread connection state, redis connection pools) would keep the unpatched, shared versions.
    refusal, configured, opted_out, opt_out_env = _in_child(_access_check, list(server.cfg.bind))
    if refusal:
        raise SystemExit(f"parley: {refusal}")
    if configured:
        server.log.info("parley: API tokens are configured; every request except health and docs needs one")
    elif opted_out:
        server.log.warning("parley: no API token and %s=1: serving %s WITHOUT access control",
                           opt_out_env, ", ".join(server.cfg.bind))
    else:
        server.log.info("parley: no API token configured: serving loopback clients only (%s)",
                        ", ".join(server.cfg.bind))


def _access_check(binds: list[str]) -> list:
    from parley.config import get_settings
    from web.auth import OPT_OUT_ENV, bind_refusal, tokens_configured_safely

    configured = tokens_configured_safely()
    opted_out = get_settings().allow_unauthenticated
    return [bind_refusal(binds, tokens_configured=configured, opted_out=opted_out), configured, opted_out, OPT_OUT_ENV]


def _in_child(function, *args):
    """`function(*args)` run in a forked child; its JSON result, or SystemExit with the child's error."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        code = 1
        try:
            with os.fdopen(write_end, "w") as out:
                json.dump(function(*args), out)
            code = 0
        except BaseException:  # noqa: BLE001  (the master reports it)
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as answer:
        text = answer.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not text:
        raise SystemExit("parley: the start-up access check failed (its error is above)")
    return json.loads(text)


def _raise_open_file_limit(server):
    # Every open stream is a socket: a gevent worker serving worker_connections of them needs that many file
    # descriptors and more (database, Redis, logs), and many systems start processes with a soft limit of 1024.
    wanted = server.cfg.worker_connections + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
        if new_soft < wanted:
            server.log.warning("parley: open files limited to %d (hard limit); %d worker connections need about %d",
                               new_soft, server.cfg.worker_connections, wanted)


# The longest request line gunicorn accepts (its maximum). The app answers URLs over 4096 bytes with a
# JSON 414 (web.MAX_URL_BYTES); only a line over this gets gunicorn's own plain-text 414.
limit_request_line = 8190

# Connections the kernel holds for a process to accept (gunicorn's default is 2048; Linux caps it at
# net.core.somaxconn, 4096 by default): a crowd opening a job's live page at once must not be dropped.
backlog = 4096


# A full garbage-collection pass scans every object the process holds; with 2,500 open streams it paused a
# web process for 150-230 ms, several times a minute, and every request waiting then waited for it (the API
# p99 of scripts/bench/fanout.py). What the app loaded at start is frozen out of those passes, and a full pass
# comes after 100 middle-generation passes instead of 10 (Python's default); young passes are unchanged.
GC_THRESHOLDS = (700, 10, 100)


def post_worker_init(worker):
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)

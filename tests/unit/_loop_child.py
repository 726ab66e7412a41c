"""Helper process for test_runtime_loop: runs a ServiceLoop bound to one ipc socket.

argv: <rundir>. Prints "ready <socket path>" once bound, runs until SIGTERM/SIGINT, and
exits 0 after the loop has cleaned up.
"""

import sys

import zmq

from sunbeam.shared.runtime import ServiceLoop, Shutdown, endpoint, ensure_rundir, get_logger


def main() -> int:
    rundir = ensure_rundir(sys.argv[1])
    with Shutdown() as shutdown:
        shutdown.install_signal_handlers()
        loop = ServiceLoop("child", shutdown, log=get_logger("child", stream=sys.stderr))
        pull = loop.socket(zmq.PULL)
        loop.bind(pull, endpoint(rundir, "child"))
        loop.on_readable(pull, lambda s: s.recv())
        print("ready", endpoint(rundir, "child")[len("ipc://") :], flush=True)
        loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

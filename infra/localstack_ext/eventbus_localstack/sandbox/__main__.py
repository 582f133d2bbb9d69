"""`python -m eventbus_localstack.sandbox`: one execution environment, until SIGTERM."""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback

from eventbus_localstack.sandbox.api import SandboxServer
from eventbus_localstack.sandbox.environment import Sandbox
from eventbus_localstack.sandbox.localstack import error_body
from eventbus_localstack.sandbox.settings import Settings, log


def main() -> int:
    settings = Settings.from_environ(dict(os.environ))
    sandbox = Sandbox(settings)
    server = SandboxServer(sandbox)
    threading.Thread(target=server.serve_forever, daemon=True, name="api").start()
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=sandbox.shutdown, daemon=True).start())
    signal.signal(signal.SIGINT, lambda *_: threading.Thread(target=sandbox.shutdown, daemon=True).start())
    try:
        sandbox.start()
        sandbox.wait()
    except Exception:
        log("sandbox failed:\n%s", traceback.format_exc())
        sandbox.localstack.init_error(error_body("init", "Sandbox.Failure", "the local sandbox failed to start"))
        return 1
    finally:
        sandbox.kill_all()
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

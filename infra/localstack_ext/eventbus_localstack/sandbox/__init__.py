"""One Lambda execution environment as a host process: the Docker-free counterpart of LocalStack's in-container init.

LocalStack's Lambda service talks to an execution environment through a small protocol (the one its Go init
speaks inside a container): it POSTs each invocation to `/invoke` on this process, and this process reports back
to `LOCALSTACK_RUNTIME_ENDPOINT` (`status/<id>/ready` or `/error` once, then per invocation `logs` and `response`
or `error`). Towards the function, this process is what Lambda's sandbox is: it serves the Runtime API
(`/2018-06-01/runtime/...`) and the Extensions API (`/2020-01-01/extension/...`) on `AWS_LAMBDA_RUNTIME_API`, and
runs AWS's own runtime interface client (`python -m awslambdaric <handler>`) as a child process, so handlers get
the real context object, error shapes and logging.

What it keeps from Lambda:
- init is done when the runtime first asks for an invocation and every extension waits for its next event; an
  extension registers only during init (`Extension.RegistrationClosed` after), internal extensions (registered
  from the runtime process) cannot take SHUTDOWN, external ones are the executables in a layer's `extensions/`;
- an invocation is handed to the runtime only when the runtime and every extension wait (the "freeze" point),
  with the request id, deadline, function ARN and trace id headers; INVOKE events go to extensions first;
- logs are the runtime's stdout and stderr between START and END, then a REPORT line (duration, billed duration,
  memory size, max memory used, init duration on the first one); an `EXTENSION` line per registered extension at
  the end of init;
- the timeout: `Task timed out after N.NN seconds` (`Sandbox.Timedout`), then the environment is re-initialised;
  a runtime that dies answers `Runtime.ExitError` and is re-initialised the same way; an invocation waiting on an
  init that never finishes times out after its timeout plus the 10 s init limit;
- shutdown (SIGTERM to this process): SHUTDOWN to the extensions that registered for it and SIGTERM to the runtime
  when any extension registered (500 ms with internal extensions only, 2,000 ms with external ones), then SIGKILL.

What differs, on purpose: code and layers stay where LocalStack unpacked them (`LAMBDA_TASK_ROOT` and the layers'
`python/` folders are on `PYTHONPATH` in Lambda's order, not under /var/task and /opt); output written after the
response is reported with the next invocation's logs; `PYTHONUNBUFFERED=1` so that a handler's output is in the pipe
before its response (Lambda reads it through a telemetry file descriptor instead).

Standard library only: it runs under LocalStack's interpreter, the runtime under the one in `_LOCALBUS_RUNTIME_PYTHON`.

The package: `settings` (what the executor passes, and the function's environment), `logs` (the function's output
per invocation), `localstack` (the reports to LocalStack), `environment` (the state machine of one execution
environment), `api` (the Runtime and Extensions APIs over HTTP), `__main__` (`python -m eventbus_localstack.sandbox`).
"""

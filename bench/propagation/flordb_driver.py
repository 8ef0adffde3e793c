"""Run flordb's propagation (``flordb.hlast.backprop``) on a batch of pairs.

Runs inside flordb's own virtual environment (flordb 4.0.1 pins old dependencies), driven by
``evaluate.py`` through a subprocess.  Reads a JSON list of jobs ``{"new", "old", "line",
"out"}`` (file paths) on stdin and prints one JSON result per line: ``{"ok", "error",
"seconds"}``.  ``backprop(lineno, source, target, out)`` takes the line in the new file
(``source``) and writes the old file (``target``) with the statement inserted to ``out``, as
text regenerated with ``ast.unparse``.
"""

import contextlib
import io
import json
import signal
import sys
import time


def _timeout(signum, frame):
    raise TimeoutError("flordb took too long")


def main() -> None:
    from flordb.hlast import backprop

    jobs = json.load(sys.stdin)
    signal.signal(signal.SIGALRM, _timeout)
    for job in jobs:
        started = time.perf_counter()
        result = {"ok": False, "error": None}
        sink = io.StringIO()
        try:
            signal.alarm(60)
            with contextlib.redirect_stdout(sink):
                backprop(job["line"], job["new"], job["old"], job["out"])
            signal.alarm(0)
            result["ok"] = True
            if "Logging record exists" in sink.getvalue():
                result["ok"] = False
                result["error"] = "record exists (nothing written)"
        except BaseException as exc:  # noqa: BLE001 - report every failure
            signal.alarm(0)
            result["error"] = f"{type(exc).__name__}: {exc}"[:300]
        result["seconds"] = time.perf_counter() - started
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

"""Helpers for tests that run `intraday` in a subprocess."""


def stderr_of(proc) -> str:
    "A process's stderr for a failure message, without waiting on one that still runs (that read never ends)."
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)
    return proc.stderr.read()

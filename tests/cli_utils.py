"""Run the ``erc`` CLI in-process or as a subprocess and capture what a user would see."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_erc(*args: str, cwd: Path | None = None, timeout: float = 300) -> Result:
    """``erc ARGS`` in a subprocess (the installed entry point's code path, offline)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "erc.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def assert_one_line_error(res: Result, *needles: str) -> None:
    """A user mistake: non-zero exit, no traceback, one ``erc: error:`` line naming the problem."""
    assert res.code != 0, res.out + res.err
    assert "Traceback" not in res.err, res.err
    lines = [line for line in res.err.splitlines() if line.startswith("erc: error:")]
    assert len(lines) == 1, res.err
    for needle in needles:
        assert needle in lines[0], lines[0]


def run_erc_here(*args: str, cwd: Path | None = None) -> Result:
    """``erc ARGS`` in this process (no interpreter start, no imports: ~100x faster than
    :func:`run_erc`), through the console script's ``main``. An exception that escapes ``main`` is
    printed as the traceback a user would see."""
    import contextlib
    import io
    import traceback

    from erc.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    before = Path.cwd()
    os.chdir(cwd or before)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except Exception:  # noqa: BLE001 - what the user would see
                traceback.print_exc(file=err)
                code = 1
    finally:
        os.chdir(before)
    return Result(code, out.getvalue(), err.getvalue())


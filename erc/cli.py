"""The ``erc`` command line: thin wrappers that parse, call library functions and print.

Every user mistake surfaces as :class:`erc.errors.UserError`, printed as one line with exit code 2.
"""

from __future__ import annotations

import errno
import sys
import warnings
from typing import TextIO

import typer

from erc.errors import ErcWarning, UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Multimodal emotion recognition in conversations: extract features once, train heads fast.")
cache_app = typer.Typer(no_args_is_help=True, help="Inspect, check and merge feature caches.")
list_app = typer.Typer(no_args_is_help=True, help="List registered datasets, encoders and heads.")
app.add_typer(cache_app, name="cache")
app.add_typer(list_app, name="list")


def _register() -> None:
    from erc import cli_cache, cli_extract, cli_list

    app.command("extract")(cli_extract.extract)
    app.command("finetune")(__import__("erc.cli_finetune", fromlist=["finetune"]).finetune)
    cache_app.command("info")(cli_cache.info)
    cache_app.command("verify")(cli_cache.verify)
    cache_app.command("merge")(cli_cache.merge)
    list_app.command("encoders")(cli_list.encoders)
    list_app.command("datasets")(cli_list.datasets)
    list_app.command("heads")(cli_list.heads)
    try:
        from erc import cli_train
    except ImportError:  # stage 2 not installed in this build
        return
    for name in ("train_head", "ablate", "report", "predict"):
        fn = getattr(cli_train, name, None)
        if fn is not None:
            app.command(name.replace("_", "-"))(fn)


_register()


# what the machine (not the user's input) can fail with mid-run: one line, exit 1
ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EIO}


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    """erc's own warnings (:class:`ErcWarning`) as one ``erc: warning:`` line; others as Python shows them."""
    if issubclass(category, ErcWarning):
        print(f"erc: warning: {message}", file=file or sys.stderr)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``erc`` console script: a user mistake (a UserError, or an option click
    rejects) is one ``erc: error:`` line with exit 2; a full disk or a folder that turned read-only
    mid-run is one line with exit 1. erc's warnings are one ``erc: warning:`` line each."""
    warnings.showwarning = _show_warning
    try:
        code = app(args=argv, prog_name="erc", standalone_mode=False)
    except typer.TyperException as e:  # what the option parser refuses (typer's own click)
        if any(c.__name__ == "NoArgsIsHelpError" for c in type(e).__mro__):
            e.show()  # type: ignore[attr-defined]  # `erc` alone: the help
            sys.exit(e.exit_code)
        ctx = getattr(e, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        print(f"erc: error: {' '.join(e.format_message().split())}{hint}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("erc: aborted", file=sys.stderr)
        sys.exit(1)
    except UserError as e:
        print(f"erc: error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        if e.errno not in ENVIRONMENT_ERRNOS:
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"erc: error: {e.strerror or e}{where}", file=sys.stderr)
        sys.exit(1)
    if isinstance(code, int) and code:  # typer.Exit(n) / --help in non-standalone mode
        sys.exit(code)


if __name__ == "__main__":
    main()

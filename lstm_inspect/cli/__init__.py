"""The command line: a thin click layer over the library. Only this package imports click; it may import every
other layer, and only `__main__` imports it.

Each group of commands lives in its own module (`commands_*.py`) and registers itself on `cli` when imported
at the bottom of this file.
"""
from __future__ import annotations

import difflib
import os
import sys
from typing import Any

# One BLAS thread per process unless the user chose otherwise. Set before numpy loads (the package imports it only
# on first use): the CLI reads each file in its own child process, and with several children at once (check --jobs)
# OpenBLAS's spinning worker threads took both CPUs and erased the speed-up (bench/bench_check_jobs.py). The
# matrices here are small; a second BLAS thread does not pay for itself.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import click  # noqa: E402

from .. import __version__  # noqa: E402
from ..errors import ExitCode, InspectError  # noqa: E402
from ..text_safety import visible  # noqa: E402


class _Boundary(click.Group):
    """The one error boundary of the CLI, and the default command.

    Expected failures (`InspectError`) become one line on stderr and their exit code; anything else is a bug,
    reported in one line with exit code 3. ``--traceback`` re-raises instead.
    ``lstm-inspect MODEL`` means ``lstm-inspect inspect MODEL``.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        first = 0
        while first < len(args):  # skip the group's own options to find the command word
            word = args[first]
            if word in _GROUP_OPTIONS_WITH_VALUE:
                first += 2
            elif word in _GROUP_FLAGS or word.split("=", 1)[0] in _GROUP_OPTIONS_WITH_VALUE:
                first += 1
            else:
                break
        if first < len(args) and args[first] not in self.commands:
            word = args[first]
            if not ctx.resilient_parsing and not word.startswith("-") and not _is_model_argument(word):
                close = difflib.get_close_matches(word, list(self.commands), n=1, cutoff=0.6)
                if close:
                    raise click.UsageError(f"no command {word!r} and no file of that name (did you mean "
                                           f"{close[0]!r}?)", ctx)
            args = args[:first] + ["inspect"] + args[first:]
        return super().parse_args(ctx, args)

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        """click's main, but a usage error is one line on stderr like every other error (exit 2)."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.ClickException as exc:
            hint = ""
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                hint = f" (see '{' '.join(['lstm-inspect'] + exc.ctx.command_path.split()[1:])} --help')"
            click.echo(f"lstm-inspect: error: {exc.format_message().rstrip('.')}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("lstm-inspect: aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            try:
                return super().invoke(ctx)
            finally:
                _disarm_parent()  # the command is over: its time bound must not fire while it reports
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except InspectError as exc:
            if ctx.params.get("traceback"):
                raise
            message = str(exc)
            for spool, name in _spooled.items():  # the model read from stdin is "-", not its temporary file
                message = message.replace(spool, name)
            click.echo(f"lstm-inspect: error: {visible(message)}", err=True)
            ctx.exit(int(exc.exit_code))
        except MemoryError:  # the parent's own bound (see bound_parent): one line, like a child's
            if ctx.params.get("traceback"):
                raise
            click.echo("lstm-inspect: error: showing the result needs more than --max-memory", err=True)
            ctx.exit(int(ExitCode.BAD_INPUT))
        except BrokenPipeError:
            # Output piped into `head` and closed: not an error. Point stdout at devnull so exit is quiet.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(int(ExitCode.OK))
        except Exception as exc:
            if ctx.params.get("traceback"):
                raise
            click.echo(f"lstm-inspect: internal error: {type(exc).__name__}: {visible(exc)} "
                       "(run with --traceback for details)", err=True)
            ctx.exit(int(ExitCode.INTERNAL))


_GROUP_FLAGS = {"--traceback", "--no-isolation", "--version", "-V", "-h", "--help", "--pager"}
_GROUP_OPTIONS_WITH_VALUE = {"--timeout", "--max-memory", "--chunk-size", "--color"}


def _is_model_argument(word: str) -> bool:
    """A first word that names a model rather than a mistyped command: an existing path, stdin, a URL, or anything
    that looks like a file name (has a dot or a slash)."""
    return word == "-" or os.path.exists(word) or "." in word or "/" in word or os.sep in word


class _Bytes(click.ParamType):
    """A size such as ``4G``, ``512M`` or ``1048576`` (bytes)."""

    name = "SIZE"
    _UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().removesuffix("B").removesuffix("I")
        unit = text[-1:] if text[-1:] in self._UNITS else ""
        try:
            size = int(float(text[: len(text) - len(unit)]) * self._UNITS[unit])
        except ValueError:
            self.fail(f"{value!r} is not a size like 4G, 512M or 1048576", param, ctx)
        if size <= 0:
            self.fail("must be more than 0", param, ctx)
        return size


#: --chunk-size's default, model.CHUNK_BYTES's (not imported from there: the model module loads numpy).
DEFAULT_CHUNK_BYTES = 32 << 20


@click.group(cls=_Boundary, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="lstm-inspect")
@click.option("--traceback", is_flag=True,
              help="Show the Python traceback of an error (for debugging; reads files in-process).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=120.0, show_default=True,
              help="Seconds one file may take to read before it is given up (reading runs in a child process).")
@click.option("--max-memory", type=_Bytes(), default="4G", show_default=True,
              help="Memory one file's reading may use (child process address-space limit).")
@click.option("--chunk-size", type=_Bytes(), default=DEFAULT_CHUNK_BYTES, show_default="32M",
              help="Bytes of an array read at once by the commands that read every value (statistics, check, "
                   "snapshot, export, diff); memory use stays near this, whatever the file's size.")
@click.option("--no-isolation", is_flag=True,
              help="Read files in this process: no timeout, memory limit or crash containment. For trusted files.")
@click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True,
              help="Colour in the output: auto = on a terminal unless NO_COLOR is set.")
@click.option("--pager", is_flag=True, help="Show the output in a pager ($PAGER, else less).")
def cli(traceback: bool, timeout: float, max_memory: int, chunk_size: int, no_isolation: bool, color: str,
        pager: bool) -> None:
    """Open saved Keras models without TensorFlow and show what is inside their recurrent layers.

    `lstm-inspect MODEL` is short for `lstm-inspect inspect MODEL`.
    """
    # Only what this run changes: importing the model (numpy) or the renderer (rich) here would make `--help`,
    # `check --list-rules` and `inspect --json` pay for what they never use. (A module loaded already, by an
    # earlier in-process run, is reset.)
    if chunk_size != DEFAULT_CHUNK_BYTES or "lstm_inspect.model" in sys.modules:
        from .. import model

        model.CHUNK_BYTES = chunk_size
    if color != "auto" or "lstm_inspect.render.text" in sys.modules:
        from ..render.text import set_color

        set_color(color)
    if pager:
        _page_output(click.get_current_context(), color)


def _page_output(ctx: click.Context, color: str) -> None:
    """Collect what the command prints on stdout, then show it in a pager when the command is done."""
    import io

    from ..render.text import set_color

    real_stdout = sys.stdout
    buffer = io.StringIO()
    # Lay the output out for the terminal the pager runs in, not for the pipe into it.
    if real_stdout.isatty():
        os.environ.setdefault("COLUMNS", str(os.get_terminal_size(real_stdout.fileno()).columns))
        if color == "auto" and not os.environ.get("NO_COLOR"):
            set_color("always")  # the pager shows colour (less -R)
    sys.stdout = buffer

    def show() -> None:
        sys.stdout = real_stdout
        text = buffer.getvalue()
        if text:
            click.echo_via_pager(text, color=None if color == "auto" else color == "always")

    ctx.call_on_close(show)


def isolation_settings() -> dict[str, Any]:
    """The group's --timeout, --max-memory, --no-isolation and --traceback, read in the command's thread."""
    params = click.get_current_context().find_root().params
    return {"in_process": bool(params.get("no_isolation") or params.get("traceback")),
            "timeout": params.get("timeout"), "max_memory": params.get("max_memory")}


def isolated(func: Any, *args: Any, label: str, settings: dict[str, Any] | None = None) -> Any:
    """``func(*args)`` on an untrusted file, in a child process bounded by the group's --timeout and --max-memory
    (see `lstm_inspect.isolation`); its result must be JSON data. In-process with --no-isolation or --traceback.
    Pass `settings` (from `isolation_settings`) when calling from another thread."""
    from .. import isolation

    settings = settings or isolation_settings()
    if settings["in_process"]:
        return func(*args)
    isolation.disarm_parent()
    try:
        result = isolation.run(func, *args, label=label, timeout=settings["timeout"],
                               max_memory=settings["max_memory"])
    except isolation.InternalError as exc:
        raise RuntimeError(str(exc)) from None  # a bug in the child: reported by the boundary as exit 3
    bound_parent(settings)
    return result


def _disarm_parent() -> None:
    if _BOUND_PARENT:
        from .. import isolation

        isolation.disarm_parent()


#: Set by the console script: the parent process bounds itself too (not when the CLI runs inside another
#: program, such as a test runner, whose own memory and signals are not ours to take).
_BOUND_PARENT = False


def bound_parent(settings: dict[str, Any]) -> None:
    """What follows a child's answer — parsing it, rendering it — runs under --timeout and --max-memory as well
    (see `isolation.bound_parent`)."""
    if _BOUND_PARENT and not settings["in_process"]:
        from .. import isolation

        isolation.bound_parent(settings["timeout"], settings["max_memory"])


#: How much a model piped into stdin (`lstm-inspect -`) may hold; it is spooled to a temporary file first.
MAX_STDIN_BYTES = 4 << 30
_REMOTE_SCHEMES = ("http://", "https://", "s3://", "gs://", "gcs://", "hf://", "ftp://", "az://", "abfs://")


class _ModelPath(click.Path):
    """A model argument: a local path; ``-`` for the model on stdin (spooled to a temporary file, bounded by
    MAX_STDIN_BYTES, removed when the command ends); a URL is refused in one line that says how to read it."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        text = str(value)
        if text == "-":
            return _spool_stdin(ctx)
        if text.lower().startswith(_REMOTE_SCHEMES):
            raise InspectError("lstm-inspect reads local files only (no network access); download the file first "
                               "(curl -LO, huggingface-cli download, aws s3 cp, gsutil cp) or pipe it in: "
                               f"curl -sL '{text}' | lstm-inspect -", text)
        return super().convert(value, param, ctx)


MODEL = _ModelPath()
#: The temporary file holding stdin, to name it "-" in messages.
_spooled: dict[str, str] = {}


def _spool_stdin(ctx: Any) -> str:
    import shutil
    import tempfile

    stream = click.get_binary_stream("stdin")
    if stream.isatty():
        raise InspectError("stdin is a terminal: pipe a model into it (lstm-inspect - < model.h5)", "-")
    directory = tempfile.mkdtemp(prefix="lstm-inspect-stdin-")
    ctx.call_on_close(lambda: shutil.rmtree(directory, ignore_errors=True))
    path = os.path.join(directory, "stdin")
    size = 0
    with open(path, "wb") as out:
        while chunk := stream.read(1 << 20):
            size += len(chunk)
            if size > MAX_STDIN_BYTES:
                raise InspectError(f"more than {MAX_STDIN_BYTES >> 30} GiB on stdin; save it to a file first", "-")
            out.write(chunk)
    _spooled[path] = "-"
    return path


def shown_path(path: str) -> str:
    """How a model path is named in output: ``-`` for the spooled stdin."""
    return _spooled.get(path, path)


def layer_option(func: Any) -> Any:
    return click.option("--layer", "layers", multiple=True, metavar="NAME",
                        help="Only layers whose path contains NAME (repeatable).")(func)


def main(argv: list[str] | None = None) -> int:
    """The console script."""
    global _BOUND_PARENT
    _BOUND_PARENT = True
    try:
        cli.main(args=argv, prog_name="lstm-inspect", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0)
    return int(ExitCode.OK)


from . import commands_inspect  # noqa: E402,F401  (registers its commands)
from . import commands_check  # noqa: E402,F401  (registers its commands)
from . import commands_forward  # noqa: E402,F401  (registers its commands)
from . import commands_report  # noqa: E402,F401  (registers its commands)

if __name__ == "__main__":
    sys.exit(main())

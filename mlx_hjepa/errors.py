"""The command-line boundary: every user error becomes one sentence, tracebacks only on request.

Each command (train, eval, export, data, report) runs its body through `run_command`. A
ValueError (config problems included) or an OSError is the user's to fix: it is printed as one
sentence, OSErrors with the path and what to do. `--debug` or MLX_HJEPA_DEBUG=1 re-raises
instead, for the full traceback. Pure Python: no MLX.
"""

import errno
import os
import sys

DEBUG_ENV = "MLX_HJEPA_DEBUG"
DEBUG_HINT = f"(--debug or {DEBUG_ENV}=1 shows the traceback)"

# errno -> what to do about it
_OS_ADVICE = {
    errno.EROFS: "the file system is read-only; choose a writable folder (e.g. --output-dir)",
    errno.EACCES: "permission denied; choose a folder you can write to, or fix its permissions",
    errno.EPERM: "the operation is not permitted; choose a folder you own",
    errno.ENOSPC: "the disk is full; free some space (the last complete checkpoint is intact) and run again",
    errno.EDQUOT: "the disk quota is exceeded; free some space and run again",
    errno.ENOTDIR: "a part of this path is a file, not a folder; pass a folder path",
    errno.EISDIR: "this is a folder, not a file; pass a file path",
    errno.ELOOP: "it is a symbolic link that loops; remove or fix the link",
    errno.ENOENT: "it does not exist; check the path",
    errno.ENAMETOOLONG: "the name is too long for this file system; use a shorter path",
    errno.EIO: "the disk reported an I/O error; check the drive and copy the data elsewhere",
}


def debug_requested(args=None):
    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def path_text(path):
    """A path as text, whatever bytes its name holds (undecodable bytes shown as \\xNN escapes)."""
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def os_error_sentence(err):
    """One sentence for an OSError: what failed, on which path, and what to do."""
    if err.errno is None:  # raised by this package with its own sentence
        return path_text(str(err))
    where = f" {path_text(err.filename)}" if err.filename else ""
    if getattr(err, "filename2", None):
        where += f" -> {path_text(err.filename2)}"
    advice = _OS_ADVICE.get(err.errno)
    reason = err.strerror or type(err).__name__
    if advice:
        return f"cannot use{where}: {advice} ({reason})."
    return f"cannot use{where}: {reason}; check the path and its permissions {DEBUG_HINT}."


def user_message(err):
    if isinstance(err, OSError):
        return os_error_sentence(err)
    return path_text(str(err))


def run_command(body, args, prefix="error:", value_error_code=2, user_errors=()):
    """Run `body()` and return its exit code. A ValueError (exit `value_error_code`), an OSError
    (exit 1) or one of `user_errors` (exit 1) becomes one line on stderr, unless debugging was
    asked for."""
    try:
        return body()
    except (ValueError, OSError, *user_errors) as err:
        if debug_requested(args):
            raise
        print(f"{prefix} {user_message(err)}", file=sys.stderr)
        return value_error_code if isinstance(err, ValueError) else 1


def add_debug_flag(parser):
    parser.add_argument("--debug", action="store_true",
                        help=f"show Python tracebacks instead of one-line errors (also {DEBUG_ENV}=1)")

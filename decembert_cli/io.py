"""Files a command reads and writes, by the rules every command follows:

- ids are names, never paths (`safe_id`); an input is a regular file before it is opened (`regular_file`);
- outputs: an output that is, or would overwrite, one of the command's inputs is refused before any work,
  and so is an existing file the command does not document that it replaces (`check_outputs`);
- writes are atomic (a reader sees the old file or the new one, never half of one) through temporary files
  with a random suffix in the same folder, which no user file can collide with (`atomic_write_bytes`);
- one writer per output folder (`folder_lock`);
- JSON-lines logs are appended line by line; a torn last line from a crash is dropped on reading.
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import json
import os
import re
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from decembert_cli.errors import DecembertError

METRICS_LOG = "metrics.jsonl"  # a run folder's metrics log: one JSON object per line
MAX_ID_BYTES = 200  # a video id names files ({id}.npy, .{id}.npy.XXXX.tmp): file names stay under 255 bytes
_UNSAFE_ID = re.compile(r"(^\.|[/\\\x00-\x1f\x7f]|^$)")


def safe_id(video_id: object) -> bool:
    """Whether an id (of a video, a clip, a prediction) can name files in an output folder: a string with no
    separator, no leading dot (hidden names, ".."), no control character, not empty, at most MAX_ID_BYTES in
    UTF-8 (and encodable). Ids are names, never paths: every reader of ids from files checks it."""
    if not isinstance(video_id, str) or _UNSAFE_ID.search(video_id):
        return False
    try:
        return len(video_id.encode("utf-8")) <= MAX_ID_BYTES
    except UnicodeEncodeError:  # a lone surrogate (from a file name that is not UTF-8)
        return False


def regular_file(path: str | os.PathLike[str], what: str = "file") -> Path:
    """`path` if it is a regular file (a symlink to one is fine); else one error naming it. Called before
    any open() of an input: a FIFO or a device would block or never end."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DecembertError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise DecembertError(f"cannot read {what} {path}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a pipe, a socket or a device)"
        raise DecembertError(f"{what} {path} is {kind}; give a regular file")
    return path


MAX_NAME_BYTES = 255  # a file name's limit on every common file system


def user_path(path: str | os.PathLike[str], what: str = "--out") -> Path:
    """`path` with ~ expanded, checked to be a name the file system can hold: one error naming `what`
    instead of a traceback for an unknown user (~nosuchuser) or a name over 255 bytes."""
    text = os.fspath(path)
    expanded = os.path.expanduser(text)
    if expanded.startswith("~"):
        raise DecembertError(f"{what} {text}: no such user's home folder; write the path out in full")
    for part in Path(expanded).parts:
        if len(os.fsencode(part)) > MAX_NAME_BYTES:
            raise DecembertError(
                f"{what}: the name {part[:40]}... is {len(os.fsencode(part))} bytes, over the file system's limit "
                f"of {MAX_NAME_BYTES}; choose a shorter name"
            )
    return Path(expanded)


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): compare the absolute, normalised paths
        return os.path.abspath(a) == os.path.abspath(b)


def is_png(path: Path) -> bool:
    """Whether `path` is a PNG picture (what the visualize commands replace: an earlier call's output)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(8) == b"\x89PNG\r\n\x1a\n"
    except OSError:
        return False


def read_json_object(path: Path, limit: int = 1 << 24) -> dict[str, Any] | None:
    """The JSON object in `path` (a regular file of at most `limit` bytes), or None: to recognise a file this
    toolkit wrote (which it may replace), never to read an input."""
    try:
        if regular_file(path).stat().st_size > limit:
            return None
        found = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError, DecembertError):
        return None
    return found if isinstance(found, dict) else None


def check_outputs(
    outputs: Iterable[str | os.PathLike[str]],
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    *,
    replaces: bool | Callable[[Path], bool] = False,
    flag: str = "--out",
) -> None:
    """The output rule, checked before any work: no output file may be one of the command's inputs (also
    through another path or a link to it), and an existing output is refused unless the command documents
    that it replaces it (`replaces`: always, or the files this test accepts, e.g. an earlier call's output;
    it then writes with an atomic rename, never in place). `outputs` are the files the command will write."""
    given = [user_path(i, "input") for i in inputs if i is not None]
    for output in outputs:
        out = user_path(output, flag)
        for source in given:
            if _same(out, source):
                raise DecembertError(
                    f"{flag}: {out} is an input of this command ({source}); it would be overwritten: "
                    "write to another path"
                )
        if out.is_dir() and not out.is_symlink():
            raise DecembertError(f"{flag}: {out} is a folder; name a file to write")
        if (out.exists() or out.is_symlink()) and not (replaces is True or (callable(replaces) and replaces(out))):
            raise DecembertError(
                f"{flag}: {out} exists and is not a file this command wrote; it never overwrites one: choose a new name"
            )


def check_store(folder: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]], flag: str = "--out") -> None:
    """The output rule for a folder of outputs (a feature or caption store, a run folder): it must not be an
    input file and no input may lie inside it, where an output could take its name."""
    out = user_path(folder, flag)
    if out.exists() and not out.is_dir():
        raise DecembertError(f"{flag} {out} is a file; name a folder to write into")
    root = os.path.abspath(out)
    for source in inputs:
        path = os.path.abspath(user_path(source, "input"))
        if path == root or path.startswith(root + os.sep):
            raise DecembertError(
                f"{flag} {out} holds the input {source}: outputs could overwrite it; write to another folder"
            )


LOCK_FILE = ".decembert.lock"


def _holder(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        found = json.loads(os.read(fd, 65536) or b"{}")
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "a process that has not said which"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder.get("started", 0))))
    return f"pid {holder.get('pid')} on {holder.get('host')}, since {started}: {holder.get('command', '?')}"


@contextlib.contextmanager
def folder_lock(
    folder: str | os.PathLike[str],
    part: str = "",
    *,
    wait: bool = False,
    role: str = "",
    fix: str = "choose a writable folder",
) -> Iterator[None]:
    """Hold the one-writer lock of an output folder (created if missing) for the `with` block.

    A second writer gets one error naming the holder (pid, host, start, command), or with `wait` (a shared
    product such as the corpus index, which the first writer builds and the others then read) waits for it,
    with a note naming it. The lock is an flock on
    FOLDER/.decembert.lock (`part`: a lock of its own, e.g. per shard of a sharded job): the kernel drops it
    when its process dies however it ends, so a stale lock is taken over, with a note naming the dead
    holder. On a shared file system this holds where flock works across machines (NFSv4, Lustre with
    `flock` mounted, GPFS); where the file system refuses locks the run goes on with a note. A folder this
    call created is removed again if the block leaves nothing in it. A folder that cannot be written is one
    error, "cannot write ROLE to FOLDER" (`role`, e.g. "the corpus index"; else "into FOLDER") and `fix`."""
    root = user_path(folder)
    created = not root.exists()
    name = LOCK_FILE if not part else f".decembert-{part}.lock"
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        where = f"{role} to" if role else "into"  # e.g. "cannot write the corpus index to DIR"
        raise DecembertError(f"cannot write {where} {root}: {exc.strerror}; {fix}") from None
    locked = False  # by this process: only then is the file's text ours to clear
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:
            if not wait:
                raise DecembertError(
                    f"{root} is in use by another decembert process ({_describe(_holder(fd))}); wait for it to "
                    "finish or stop it, or choose another folder"
                ) from None
            print(f"note: {root}: waiting for {_describe(_holder(fd))}", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
            locked = True
        except OSError as exc:  # ENOLCK, EOPNOTSUPP: a file system without locks
            print(
                f"note: {root}: the file system does not lock files ({exc.strerror}); "
                "make sure no other process writes this folder",
                file=sys.stderr,
            )
        if locked and (stale := _holder(fd)):
            print(f"note: {root}: took over the lock of {_describe(stale)}, which has ended", file=sys.stderr)
        if locked:
            mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "command": _command()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(mine).encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            if created and locked and [p.name for p in root.iterdir()] == [name]:
                (root / name).unlink()  # still locked: a writer that opened the file meanwhile finds it taken
                root.rmdir()
            elif locked:
                os.ftruncate(fd, 0)  # empty: released on purpose (a holder's text left behind = it died)
        os.close(fd)


def _command() -> str:
    program = Path(sys.argv[0]).name if sys.argv else ""
    words = ["decembert" if program == "__main__.py" else program, *sys.argv[1:]]
    text = " ".join(words)
    return text if len(text) <= 200 else text[:197] + "..."


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file (mkstemp gives 0600)
FOLDER_MODE = 0o777 & ~_umask()  # what mkdir() would give a new folder (mkdtemp gives 0700)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise DecembertError(f"cannot write {path}: {exc.strerror}; choose a writable folder") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise DecembertError(f"cannot write {path}: {exc.strerror}; the previous file, if any, is unchanged") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomic `write_text` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


MAX_INT_DIGITS = 30  # longer integers in a JSON file are no time, size or id this toolkit reads


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"a {len(text)}-digit number")
    return int(text)


def decode_json(text: str, where: str, *, huge_ints: bool = False) -> Any:
    """json.loads whose every failure is one DecembertError naming `where` (a file, a line): syntax
    errors with line and column, nesting too deep, numbers too large to use (unless `huge_ints`:
    a reader that checks each entry on its own and fails only that entry)."""
    try:
        return json.loads(text, parse_int=int if huge_ints else _parse_int)
    except json.JSONDecodeError as exc:
        raise DecembertError(f"{where}, line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise DecembertError(f"{where}: JSON nested too deeply") from None
    except ValueError as exc:  # from _parse_int
        raise DecembertError(f"{where}: {exc} is too large for any value here") from None


_JSON_SPACE = " \t\n\r"
_NUMBER_CHARS = "0123456789+-.eE"
SCAN_CHUNK = 1 << 24  # characters decoded at a time by `scan_json_object`


def scan_json_object(
    path: Path, chunk: int = SCAN_CHUNK, shape: str = "{key: value, ...}"
) -> Iterator[tuple[str, int, int]]:
    """(key, byte offset, byte length) of each member's value of the JSON object that file `path` holds,
    in file order, read in `chunk`-character pieces: memory holds a piece and the largest value, never the
    file (HowTo100M's caption.json is one object over 1.22M videos). Each value is parsed once here (as
    `decode_json` would: the same errors, naming the file, line and column), and its bytes can be read
    back and parsed on their own later. A UTF-8 BOM is skipped; a top level that is not an object, or
    anything after it but white space, is one error (`shape` says what the object should hold)."""
    where = str(path)
    decoder = json.JSONDecoder(parse_int=_parse_int)
    try:
        handle = open(path, "rb")  # noqa: SIM115  (closed below; a generator holds it)
    except OSError as exc:
        raise DecembertError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        start = handle.read(3)
        skipped = 3 if start == b"\xef\xbb\xbf" else 0
        handle.seek(skipped)
        state = _Scan(handle, where, skipped, chunk)
        state.skip_space()
        if state.char() != "{":
            found = {"[": "an array", '"': "a string", "": "nothing"}.get(state.char(), "a number or literal")
            raise DecembertError(f"{where}: expected an object {shape}, got {found}")
        state.pos += 1
        state.skip_space()
        if state.char() == "}":
            state.pos += 1
        else:
            while True:
                if state.char() != '"':
                    raise state.error("Expecting property name enclosed in double quotes")
                key = state.value(decoder)[0]
                state.skip_space()
                if state.char() != ":":
                    raise state.error("Expecting ':' delimiter")
                state.pos += 1
                state.skip_space()
                _, offset, length = state.value(decoder)
                yield key, offset, length
                state.skip_space()
                if state.char() == ",":
                    state.pos += 1
                    state.skip_space()
                    continue
                if state.char() == "}":
                    state.pos += 1
                    break
                raise state.error("Expecting ',' delimiter")
        state.skip_space()
        if state.char() != "":
            raise state.error("Extra data")


class _Scan:
    """`scan_json_object`'s cursor: a window of the decoded file, its position, and the byte offset of the
    window's start (advanced as the window moves)."""

    def __init__(self, handle: BinaryIO, where: str, skipped: int, chunk: int) -> None:
        self.handle, self.where, self.chunk = handle, where, chunk
        self.decode = codecs.getincrementaldecoder("utf-8")()
        self.buf, self.pos, self.eof = "", 0, False
        self.dropped = 0  # characters dropped from the window's front so far
        self.base = skipped  # byte offset of buf[0]
        self.ascii = True
        self.mark, self.mark_byte = 0, skipped  # a known (position, byte offset) in buf: offsets are counted on

    def more(self) -> bool:
        """Read the next piece (dropping what was consumed); False at the end of the file."""
        if self.eof:
            return False
        self.base = self.byte(self.pos)
        self.dropped += self.pos
        self.buf, self.pos, self.mark, self.mark_byte = self.buf[self.pos :], 0, 0, self.base
        data = self.handle.read(self.chunk)
        try:
            text = self.decode.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            at = self.base + len(self.buf.encode("utf-8")) + exc.start
            raise DecembertError(f"cannot read {self.where}: not UTF-8 at byte {at}; save it as UTF-8") from None
        self.eof = not data
        self.buf += text
        self.ascii = self.buf.isascii()
        return bool(text) or not self.eof

    def byte(self, pos: int) -> int:
        """The byte offset in the file of buf[pos] (pos at or after the last one asked for)."""
        if self.ascii:
            return self.base + pos
        self.mark_byte += len(self.buf[self.mark : pos].encode("utf-8"))
        self.mark = pos
        return self.mark_byte

    def char(self) -> str:
        """The character at the cursor ("" at the end of the file)."""
        while self.pos >= len(self.buf):
            if not self.more():
                return ""
        return self.buf[self.pos]

    def skip_space(self) -> None:
        while self.char() in _JSON_SPACE and self.char() != "":
            self.pos += 1

    def value(self, decoder: json.JSONDecoder) -> tuple[Any, int, int]:
        """Parse the value at the cursor: (value, byte offset, byte length); the cursor moves past it. A value
        cut by the window's end is parsed again with more of the file; a value that ends with the window, or
        a number followed only by what could continue it, waits for the next piece too."""
        while True:
            try:
                value, end = decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                at = self.dropped + exc.pos  # (more() moves the window)
                if self.more():
                    continue
                raise self.error(exc.msg, at - self.dropped) from None
            except RecursionError:
                raise DecembertError(f"{self.where}: JSON nested too deeply") from None
            except ValueError as exc:  # from _parse_int
                raise DecembertError(f"{self.where}: {exc} is too large for any value here") from None
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if (end >= len(self.buf) or number and not self.buf[end:].strip(_NUMBER_CHARS)) and self.more():
                continue  # (a number cut by the window's end, "949." or "1e", parses as its prefix)
            offset = self.byte(self.pos)
            length = self.byte(end) - offset
            self.pos = end
            return value, offset, length

    def error(self, message: str, pos: int | None = None) -> DecembertError:
        """`message` at buf[pos] (the cursor by default) as `decode_json` says it: file, line, column."""
        at = self.byte(self.pos if pos is None else max(pos, self.pos))
        self.handle.seek(0)
        line, last, read = 1, b"", 0
        while read < at:  # count the lines before it a block at a time (the file may be larger than memory)
            block = self.handle.read(min(self.chunk, at - read))
            if not block:
                break
            read += len(block)
            line += block.count(b"\n")
            cut = block.rfind(b"\n")
            last = block[cut + 1 :] if cut >= 0 else last + block
        column = len(last.decode("utf-8-sig", "replace")) + 1
        return DecembertError(f"{self.where}, line {line}, column {column}: not valid JSON ({message})")


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line; an OSError (disk full, folder gone) is one clear error."""
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
    except OSError as exc:
        raise DecembertError(
            f"cannot append to {path}: {exc.strerror}; free space or fix the folder and run again "
            "(with --resume once the run has a checkpoint)"
        ) from None


def read_jsonl(path: Path, *, torn_tail: bool = True) -> tuple[list[dict[str, Any]], str | None]:
    """The objects of a JSON-lines file, and a note when its last line was torn (a crash mid-write:
    invalid JSON and no final newline), which is dropped if `torn_tail` (logs), an error if not
    (files that are scored). Any other bad line is an error naming the line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DecembertError(f"cannot read {path}: {exc}") from None
    lines = text.split("\n")
    rows: list[dict[str, Any]] = []
    note = None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, parse_int=_parse_int)
        except json.JSONDecodeError as exc:
            if torn_tail and n == len(lines):  # the last line has no newline after it: a write cut short
                note = f"{path}, line {n}: an incomplete last line (a write cut short) was dropped"
                break
            raise DecembertError(f"{path}, line {n}, column {exc.colno}: not JSON ({exc.msg})") from None
        except RecursionError:
            raise DecembertError(f"{path}, line {n}: JSON nested too deeply") from None
        except ValueError as exc:
            raise DecembertError(f"{path}, line {n}: {exc} is too large for any value here") from None
        if not isinstance(row, dict):
            raise DecembertError(f"{path}, line {n}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows, note

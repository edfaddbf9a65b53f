"""The package's one file layer: URIs, cached pyarrow filesystems, whole-file reads, atomic writes, safe listing.

A location is a local path (relative allowed) or a URI (``file://``, ``s3://bucket/x``, ``gs://bucket/x``). Every
stage and the science code read, write and list through these functions, so the rules hold everywhere:

- writes are atomic: bytes go to a hidden staging sibling (``.<name>.<random>.tmp``) that is then renamed over the
  target with ``os.replace`` (a server-side copy on object stores), so a reader never sees a half-written file and
  plain Parquet readers (pandas, pyarrow) ignore leftovers of a crash; ``durable=True`` (checkpoints, model files)
  also fsyncs the staged bytes before the rename and the folder after it, so not even a power loss leaves a
  truncated file (an fsync costs milliseconds, too much for every generated or restored image); a full disk raises
  :class:`DiskFullError` with the previous version of the file intact. :func:`atomic_write_bytes` is the one place
  that writes a file (tables, checkpoints, images, reports all go through it);
- listing never descends into a directory twice (real paths are compared, so ``up -> ..`` links cannot loop),
  never leaves the listed root through a link unless asked, and reports every entry it skipped with the reason
  (hidden, dangling link, link outside the root, wrong suffix, name that is not UTF-8) instead of dropping it;
- tables store URIs relative to their root (:func:`relative_uri` / :func:`resolve_uri`), never this machine's
  absolute paths.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import posixpath
import re
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pyarrow.fs as pafs
from fsspec.utils import glob_translate

from .errors import FairweatherError

_BUCKET_SCHEMES = ("s3", "gs", "gcs")
_GLOB_CHARS = re.compile(r"[*?\[]")


class LocationError(FairweatherError):
    """An output location cannot be written (a file where a folder should be, no permission, ...)."""


class DiskFullError(FairweatherError, OSError):
    """The disk (or the user's quota) filled up while a file was written; the file's previous version is intact.

    An :class:`OSError` too (``errno`` is ``ENOSPC`` or ``EDQUOT``), so callers that handle I/O errors keep working.
    """

    def __init__(self, message: str, code: int = errno.ENOSPC):
        super().__init__(message)
        self.errno = code


#: errno values of a full disk or quota.
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


@functools.lru_cache(maxsize=32)
def _bucket_filesystem(scheme: str, bucket: str) -> pafs.FileSystem:
    # One filesystem per bucket and process: building an S3 filesystem may itself cost a request (region lookup).
    return pafs.FileSystem.from_uri(f"{scheme}://{bucket}")[0]


def has_scheme(uri: str) -> bool:
    """True for ``scheme://...`` URIs (``file://`` included), False for plain local paths."""
    return "://" in uri


def filesystem_for(uri: str) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path)`` for a local path or a URI; local paths become absolute, bucket filesystems are cached."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
    if scheme in _BUCKET_SCHEMES:
        return _bucket_filesystem(scheme, rest.split("/", 1)[0]), rest
    return pafs.FileSystem.from_uri(uri)


def full_uri(like: str, path: str) -> str:
    """The URI of filesystem path ``path`` on the same filesystem as URI ``like`` (local paths stay plain paths)."""
    scheme, sep, _ = like.partition("://")
    if not sep:
        return path
    return f"file://{path}" if scheme == "file" else f"{scheme}://{path.lstrip('/')}"


def read_bytes(uri: str) -> bytes:
    """The whole file at ``uri``. Raises OSError (missing, permission, network) like the filesystem does."""
    fs, path = filesystem_for(uri)
    with fs.open_input_stream(path, compression=None) as stream:  # bytes as stored: never guess by suffix
        return stream.read()


def _fsync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable; best effort where the filesystem cannot fsync a folder."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_local(path: str, data: bytes, durable: bool) -> None:
    """Staging file in the same folder, write (``durable``: flush + fsync), ``os.replace`` over ``path`` (``durable``:
    fsync the folder)."""
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(staging, "xb") as sink:
            sink.write(data)
            if durable:
                sink.flush()
                os.fsync(sink.fileno())
        os.replace(staging, path)
    except BaseException:
        with contextlib.suppress(
            OSError
        ):  # nothing was staged, or it is already gone: the error is what matters
            os.unlink(staging)
        raise
    if durable:
        _fsync_folder(parent)


def atomic_write_bytes(uri: str | os.PathLike, data: bytes, *, durable: bool = False) -> None:
    """Write ``data`` to ``uri`` so that readers see either the old file or the complete new one, never a part.

    durable: on a local disk, fsync the file before and its folder after the rename, so the new file survives a
        power loss whole (checkpoints); object stores are durable once the copy returns.
    Raises :class:`DiskFullError` (one line naming the file) when the disk fills up; the previous version of the
    file is then kept.
    """
    uri = os.fspath(uri)
    fs, path = filesystem_for(uri)
    try:
        if isinstance(fs, pafs.LocalFileSystem):
            _write_local(path, data, durable)
            return
        parent, name = posixpath.split(path)
        fs.create_dir(parent, recursive=True)
        staging = f"{parent}/.{name}.{uuid.uuid4().hex[:12]}.tmp"
        try:
            with fs.open_output_stream(staging) as sink:
                sink.write(data)
            fs.move(staging, path)
        except BaseException:
            with contextlib.suppress(OSError):  # nothing was staged, or it is already gone
                fs.delete_file(staging)
            raise
    except OSError as err:
        if err.errno not in _DISK_FULL:
            raise
        kept = "the previous version is kept" if os.path.exists(path) else "nothing was written"
        raise DiskFullError(f"disk full while writing {uri}: {kept}", err.errno) from err


def write_if_changed(uri: str | os.PathLike, data: bytes) -> bool:
    """Atomically write ``data`` unless ``uri`` already holds exactly these bytes; True if written."""
    try:
        if read_bytes(os.fspath(uri)) == data:
            return False
    except OSError:
        pass  # missing or unreadable: write it
    atomic_write_bytes(uri, data)
    return True


def check_writable(uri: str, what: str) -> None:
    """Create folder ``uri`` if needed and prove a file can be written there; raises :class:`LocationError`.

    what: the config key that names the location, quoted in the message (``data.tables``).
    """
    probe = f"{uri.rstrip('/')}/.fairweather-write-check-{uuid.uuid4().hex[:8]}"
    try:
        atomic_write_bytes(probe, b"")
        fs, path = filesystem_for(probe)
        fs.delete_file(path)
    except (OSError, ValueError) as err:  # a file in the way, permission, read-only mount, bad credentials
        raise LocationError(f"{what}={uri!r} is not a writable folder: {err}") from err


def resolve_uri(root: str, uri: str) -> str:
    """A URI stored relative to table-store ``root`` -> an absolute local path or a scheme URI.

    ``uri`` is posix and may climb with ``..``; absolute URIs (``s3://``, ``gs://``, ``file://``, ``/abs``) pass
    through unchanged.
    """
    if has_scheme(uri) or uri.startswith("/"):
        return uri
    if has_scheme(root):
        scheme, _, rest = root.partition("://")
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, uri))}"
    return os.path.normpath(os.path.join(os.path.abspath(os.path.expanduser(root)), uri))


def within_roots(uri: str, roots: tuple[str, ...] | list[str]) -> bool:
    """True when ``uri`` lies in (or is) one of ``roots``; always True when ``roots`` is empty (no restriction).

    Local paths (and ``file://``) are compared by real path, so neither ``..`` nor a link can step out of a root;
    other URIs by scheme and normalised path (``s3://bucket/a/../b`` is ``s3://bucket/b``).
    """
    if not roots:
        return True

    def canonical(location: str) -> tuple[str, str]:
        scheme, sep, rest = location.partition("://")
        if not sep or scheme == "file":
            return "", os.path.realpath(os.path.expanduser(rest if sep else location))
        return scheme, posixpath.normpath("/" + rest)

    scheme, path = canonical(uri)
    for root in roots:
        root_scheme, root_path = canonical(root)
        if scheme == root_scheme and (path == root_path or path.startswith(root_path.rstrip("/") + "/")):
            return True
    return False


def relative_uri(root: str, target: str) -> str:
    """The inverse of :func:`resolve_uri`: ``target`` relative to ``root`` where both are on one filesystem.

    Local targets are always stored relative (with ``..`` where needed), so tables never hold this machine's
    absolute paths; on a cloud root a target keeps its full URI unless it lies below the root; a target on
    another filesystem is returned unchanged.
    """
    root_scheme, root_sep, root_rest = root.partition("://")
    scheme, sep, rest = target.partition("://")
    local_root, local_target = not root_sep or root_scheme == "file", not sep or scheme == "file"
    if local_root and local_target:
        base = os.path.abspath(os.path.expanduser(root_rest if root_sep else root))
        path = os.path.abspath(os.path.expanduser(rest if sep else target))
        return PurePosixPath(os.path.relpath(path, base)).as_posix()
    if root_sep and sep and scheme == root_scheme:
        base = root_rest.rstrip("/") + "/"
        if rest.startswith(base):
            return rest[len(base) :]
    return target


def escaped_name(path: str) -> str:
    """A printable, lossless stand-in for a path whose bytes are not UTF-8 (``\\xff`` for each bad byte)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@dataclass
class Listing:
    """What a listing found: file URIs (sorted) and every entry it did not list, with the reason."""

    files: list[str] = field(default_factory=list)
    #: reason -> URIs not listed (``hidden``, ``dangling_link``, ``link_outside_root``, ``seen_twice``,
    #: ``suffix``, ``unreadable_folder``, ``not_a_file``).
    skipped: dict[str, list[str]] = field(default_factory=dict)
    #: Files whose names are not UTF-8, as :func:`escaped_name` writes them: they cannot be a table's string
    #: URI, so callers report them as failures rather than lose them.
    bad_names: list[str] = field(default_factory=list)

    def skip(self, reason: str, uri: str) -> None:
        self.skipped.setdefault(reason, []).append(uri)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _walk_local(root: str, suffixes: tuple[str, ...] | None, follow_links_out: bool, out: Listing) -> None:
    """Breadth-first walk of a local folder under the rules of the module docstring.

    Links are followed only after every real entry has been seen, so a file is always listed under its real
    path when it has one inside the root, and a link only ever adds what lies outside (when allowed).
    """
    root_real = os.path.realpath(root)
    seen = {root_real}
    folders, links = deque([root]), deque()

    def take(path: str, is_dir: bool) -> None:
        real, shown = os.path.realpath(path), escaped_name(path)
        if real in seen:
            out.skip("seen_twice", shown)
        elif is_dir:
            seen.add(real)
            folders.append(path)
        elif not os.path.isfile(path):
            out.skip("not_a_file", shown)
        elif suffixes is not None and PurePosixPath(path).suffix.lower() not in suffixes:
            out.skip("suffix", shown)
        else:
            seen.add(real)
            try:
                path.encode("utf-8")
            except UnicodeEncodeError:
                out.bad_names.append(shown)
                return
            out.files.append(path)

    while folders or links:
        if not folders:
            link = links.popleft()
            real = os.path.realpath(link)
            if not os.path.exists(real):
                out.skip("dangling_link", escaped_name(link))
            elif not follow_links_out and not _inside(real, root_real):
                out.skip("link_outside_root", escaped_name(link))
            else:
                take(link, os.path.isdir(link))
            continue
        folder = folders.popleft()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            out.skip("unreadable_folder", escaped_name(folder))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                out.skip("hidden", escaped_name(entry.path))
            elif entry.is_symlink():
                links.append(entry.path)
            else:
                take(entry.path, entry.is_dir(follow_symlinks=False))


def list_files(
    uri: str, *, suffixes: tuple[str, ...] | None = None, follow_links_out: bool = False
) -> Listing:
    """Files below folder ``uri`` (recursive), as URIs on its filesystem; see the module docstring's rules.

    suffixes: lower-case suffixes to keep (others are skipped as ``suffix``); None keeps every file.
    follow_links_out: also follow links whose target lies outside ``uri`` (still never the same folder twice).
    Raises FileNotFoundError if ``uri`` is not a folder.
    """
    fs, path = filesystem_for(uri)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"not a folder: {uri}")
    out = Listing()
    if isinstance(fs, pafs.LocalFileSystem):
        _walk_local(path, suffixes, follow_links_out, out)
    else:  # object stores have no links, so pyarrow's recursive selector is safe there
        base = path.rstrip("/")
        for info in fs.get_file_info(pafs.FileSelector(path, recursive=True)):
            if info.type != pafs.FileType.File:
                continue
            if any(part.startswith(".") for part in PurePosixPath(info.path[len(base) :]).parts):
                out.skip("hidden", full_uri(uri, info.path))
            elif suffixes is not None and PurePosixPath(info.path).suffix.lower() not in suffixes:
                out.skip("suffix", full_uri(uri, info.path))
            else:
                out.files.append(info.path)
    out.files = sorted(full_uri(uri, p) for p in out.files)
    out.skipped = {k: [full_uri(uri, p) for p in v] for k, v in out.skipped.items()}
    out.bad_names = [full_uri(uri, p) for p in out.bad_names]
    return out


def is_glob(uri: str) -> bool:
    """True if ``uri`` is to be expanded as a glob: it has ``*``, ``?`` or ``[`` and does not exist as it is."""
    if not _GLOB_CHARS.search(uri):
        return False
    fs, path = filesystem_for(uri)
    return fs.get_file_info(path).type == pafs.FileType.NotFound


def list_glob(pattern: str, *, follow_links_out: bool = False) -> Listing:
    """Files matching ``pattern`` (``**`` spans folders, ``*``/``?``/``[...]`` stay in one component).

    The folder before the first wildcard is listed with :func:`list_files`' rules and filtered with fsspec's glob
    translation; skipped entries are reported only where they match the pattern.
    """
    cut = pattern.rfind("/", 0, _GLOB_CHARS.search(pattern).start())
    base, rest = (pattern[:cut] or "/", pattern[cut + 1 :]) if cut >= 0 else (".", pattern)
    _, base_path = filesystem_for(base)
    regex = re.compile(glob_translate(base_path.rstrip("/") + "/" + rest))
    found = list_files(base, follow_links_out=follow_links_out)

    def matches(found_uri: str) -> bool:
        return bool(regex.match(found_uri.partition("://")[2] or found_uri))

    out = Listing(files=[u for u in found.files if matches(u)])
    out.bad_names = [u for u in found.bad_names if matches(u)]
    for reason, uris in found.skipped.items():
        for skipped in uris:
            if matches(skipped):
                out.skip(reason, skipped)
    return out

"""Streaming `multipart/form-data` uploads straight to a temporary file.

Starlette's `request.form()` would spool the whole body (in memory up to 1 MiB, then on
disk) before anyone can check its size. Here the body is parsed as it arrives: the one file
part is written to disk in worker threads, its size is counted and the upload is refused
(413) the moment it passes the limit, and the small text fields are kept in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from .. import errors

MAX_FIELD_BYTES = 4096
MAX_FIELDS = 16
# Multipart framing around the file: boundaries, part headers, the small fields.
FRAMING_ALLOWANCE = MAX_FIELDS * (MAX_FIELD_BYTES + 1024) + 64 * 1024
_WRITE_BATCH = 1 << 20


class UploadTooLarge(errors.PayloadTooLarge):
    code = "upload_too_large"


@dataclass(slots=True)
class Upload:
    """The file part of a form, on disk at `path` (the caller removes it), and its text fields."""

    path: Path
    filename: str
    size: int
    fields: dict[str, str] = field(default_factory=dict)


class _Form:
    """Callbacks for python-multipart's push parser; file data is queued for the async writer."""

    def __init__(self, file_field: str, max_bytes: int) -> None:
        self.file_field = file_field
        self.max_bytes = max_bytes
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.file_bytes = 0
        self.file_done = False
        self.ended = False
        self.pending: list[bytes] = []
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._part_kind: str = "skip"  # "file" | "field" | "skip"
        self._part_name = ""
        self._part_data = bytearray()

    def on_part_begin(self) -> None:
        self._disposition = b""
        self._part_kind = "skip"
        self._part_data = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.strip().lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = b""
        self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = _text(options.get(b"name", b""))
        if b"filename" in options:
            if name != self.file_field or self.filename is not None:
                raise errors.BadRequest(
                    f"send exactly one file, in the form field {self.file_field!r}", code="invalid_upload"
                )
            self.filename = _text(options[b"filename"])
            self._part_kind = "file"
            return
        if len(self.fields) >= MAX_FIELDS:
            raise errors.BadRequest(f"more than {MAX_FIELDS} form fields", code="invalid_upload")
        self._part_kind = "field"
        self._part_name = name

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part_kind == "file":
            self.file_bytes += end - start
            if self.file_bytes > self.max_bytes:
                raise UploadTooLarge(f"the file is larger than the limit of {self.max_bytes} bytes")
            self.pending.append(data[start:end])
        elif self._part_kind == "field":
            self._part_data += data[start:end]
            if len(self._part_data) > MAX_FIELD_BYTES:
                raise errors.BadRequest(
                    f"form field {self._part_name!r} is over {MAX_FIELD_BYTES} bytes", code="invalid_upload"
                )

    def on_part_end(self) -> None:
        if self._part_kind == "file":
            self.file_done = True
        elif self._part_kind == "field":
            self.fields[self._part_name] = _text(bytes(self._part_data))

    def on_end(self) -> None:
        self.ended = True


async def receive_upload(request: Request, *, file_field: str, tmp_path: Path, max_bytes: int) -> Upload:
    """Parse the request's multipart body, writing the `file_field` file to `tmp_path`.

    Raises 400 `invalid_upload` for a body that is not a complete form with that one file and
    413 `upload_too_large` as soon as the file (or the declared Content-Length) passes
    `max_bytes`. Nothing is left at `tmp_path` when it raises.
    """
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise errors.BadRequest(
            f"send the file as multipart/form-data in the field {file_field!r}", code="invalid_upload"
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes + FRAMING_ALLOWANCE:
        raise UploadTooLarge(f"the upload is larger than the limit of {max_bytes} bytes")

    form = _Form(file_field, max_bytes)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": form.on_part_begin,
            "on_part_data": form.on_part_data,
            "on_part_end": form.on_part_end,
            "on_header_field": form.on_header_field,
            "on_header_value": form.on_header_value,
            "on_header_end": form.on_header_end,
            "on_headers_finished": form.on_headers_finished,
            "on_end": form.on_end,
        },
    )
    tmp_path.parent.mkdir(parents=True, exist_ok=True)
    handle: BinaryIO = await asyncio.to_thread(open, tmp_path, "xb")
    try:
        body_bytes = 0
        buffered = 0
        async for chunk in request.stream():
            body_bytes += len(chunk)
            if body_bytes > max_bytes + FRAMING_ALLOWANCE:
                raise UploadTooLarge(f"the upload is larger than the limit of {max_bytes} bytes")
            try:
                parser.write(chunk)
            except errors.ApiError:
                raise
            except Exception as exc:  # python-multipart's own errors: a malformed body
                raise errors.BadRequest(f"malformed multipart body: {exc}", code="invalid_upload") from exc
            buffered += sum(len(part) for part in form.pending)
            if buffered >= _WRITE_BATCH or form.ended:
                await _flush(handle, form.pending)
                buffered = 0
        await _flush(handle, form.pending)
        await asyncio.to_thread(handle.close)
        if not form.ended:
            raise errors.BadRequest("the multipart body is incomplete", code="invalid_upload")
        if form.filename is None or not form.file_done:
            raise errors.BadRequest(f"no file in the form field {file_field!r}", code="invalid_upload")
        return Upload(path=tmp_path, filename=form.filename, size=form.file_bytes, fields=form.fields)
    except ClientDisconnect as exc:
        await asyncio.shield(_remove(handle, tmp_path))
        raise errors.BadRequest("the upload was interrupted", code="invalid_upload") from exc
    except BaseException:
        await asyncio.shield(_remove(handle, tmp_path))
        raise


async def _flush(handle: BinaryIO, pending: list[bytes]) -> None:
    if pending:
        data = b"".join(pending)
        pending.clear()
        await asyncio.to_thread(handle.write, data)


async def _remove(handle: BinaryIO, path: Path) -> None:
    def remove() -> None:
        handle.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    await asyncio.to_thread(remove)


def _text(raw: bytes) -> str:
    """Form text: UTF-8 (browsers send it), with anything undecodable replaced."""
    return unicodedata.normalize("NFC", raw.decode("utf-8", "replace"))

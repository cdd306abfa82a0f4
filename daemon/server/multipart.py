"""``multipart/form-data`` bodies (RFC 7578), sans-I/O: the whole body (already size-limited) in, parts out.

    parts = parse_form(content_type_header, body)    # raises FormError with one line saying what is wrong
    parts[0].name, parts[0].filename, parts[0].content_type, parts[0].data
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_PARTS = 64
MAX_PART_HEADER_BYTES = 8192


class FormError(ValueError):
    pass


@dataclass(frozen=True)
class Part:
    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None

    def text(self) -> str:
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError:
            raise FormError(f"form field {self.name!r} is not UTF-8 text") from None


def header_params(value: str) -> tuple[str, dict[str, str]]:
    """``'form-data; name="file"; filename="a.wav"'`` → ``("form-data", {"name": "file", "filename": "a.wav"})``."""
    items = _split_params(value)
    main = items[0].strip().lower() if items else ""
    params: dict[str, str] = {}
    for item in items[1:]:
        key, eq, raw = item.strip().partition("=")
        if not eq:
            continue
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        params[key.strip().lower()] = raw
    return main, params


def _split_params(value: str) -> list[str]:
    """Split at ``;`` outside quotes."""
    items, current, quoted, escaped = [], [], False, False
    for ch in value:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            current.append(ch)
            escaped = True
        elif ch == '"':
            current.append(ch)
            quoted = not quoted
        elif ch == ";" and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    items.append("".join(current))
    return items


def boundary_of(content_type: str | None) -> str:
    main, params = header_params(content_type or "")
    if main != "multipart/form-data":
        raise FormError(f"expected multipart/form-data, got {main or 'no Content-Type'}")
    boundary = params.get("boundary", "")
    if not boundary or len(boundary) > 200:
        raise FormError("multipart/form-data without a valid boundary parameter")
    return boundary


def parse_form(content_type: str | None, body: bytes) -> list[Part]:
    delimiter = b"--" + boundary_of(content_type).encode("latin-1")
    start = body.find(delimiter)
    if start < 0:
        raise FormError("the multipart body does not contain its boundary")
    parts: list[Part] = []
    position = start + len(delimiter)
    while True:
        if body.startswith(b"--", position):
            return parts  # the closing delimiter
        line_end = body.find(b"\r\n", position)
        if line_end < 0:
            raise FormError("the multipart body ends inside a part (no closing boundary)")
        position = line_end + 2
        head_end = body.find(b"\r\n\r\n", position)
        if head_end < 0 and body.startswith(b"\r\n", position):
            head_end = position - 2  # a part without headers
        if head_end < 0 or head_end - position > MAX_PART_HEADER_BYTES:
            raise FormError("a multipart part has no complete header")
        headers = _part_headers(body[position:head_end])
        data_start = head_end + 4
        next_delimiter = body.find(b"\r\n" + delimiter, data_start)
        if next_delimiter < 0:
            raise FormError("the multipart body ends inside a part (no closing boundary)")
        parts.append(_part(headers, body[data_start:next_delimiter]))
        if len(parts) > MAX_PARTS:
            raise FormError(f"more than {MAX_PARTS} form fields")
        position = next_delimiter + 2 + len(delimiter)


def _part_headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in raw.split(b"\r\n"):
        if not line:
            continue
        name, colon, value = line.partition(b":")
        if not colon:
            raise FormError("a multipart part has a malformed header line")
        headers[name.decode("latin-1").strip().lower()] = value.decode("utf-8", errors="replace").strip()
    return headers


def _part(headers: dict[str, str], data: bytes) -> Part:
    disposition, params = header_params(headers.get("content-disposition", ""))
    if disposition != "form-data" or "name" not in params:
        raise FormError("a multipart part lacks Content-Disposition: form-data; name=...")
    return Part(params["name"], data, params.get("filename"), headers.get("content-type"))

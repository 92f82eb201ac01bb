"""Read and edit terraform.tfvars, changing only the bytes of the one value being set.

python-hcl2 is the judge of what a file means, but its writer does not keep formatting, so edits
are made in the text: a small scanner finds `NAME = <expr>` at top level and the exact end of the
expression, the new value's text replaces that span, and hcl2 re-reads the result to prove that
only that variable changed.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Literal

import hcl2
from hcl2.utils import SerializationOptions
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from scaler.errors import ScalerError
from scaler.fsutil import write_atomic

DEFAULT_VAR_FILE = Path("terraform.tfvars")
IMAGE_VAR = "image_slug"

ValueKind = Literal["string", "number", "bool", "json"]

# Strings keep their quotes and escapes: that tells a string from an expression hcl2 could not
# evaluate (those come back as "${...}"), and lets scaler decode escapes itself.
_HCL2_OPTIONS = SerializationOptions(
    with_comments=False, preserve_heredocs=False, strip_string_quotes=False
)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEYWORDS = frozenset({"true", "false", "null", "for", "in", "if"})
# As hcl2's grammar has it: the marker line ends right after the name, the closing line holds
# only indentation and the name.
_HEREDOC_START = re.compile(r"<<(-?)([A-Za-z][A-Za-z0-9._-]*)\r?\n")
_NUMBER = re.compile(r"-?(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][+-]?\d+)?")
# Packer's digitalocean artifact_id is "<regions joined by ','>:<snapshot id>".
_ARTIFACT_ID = re.compile(r"(?:[a-z]+[0-9]*(?:,[a-z]+[0-9]*)*:)?([0-9]+)")
# At the end of a line these leave the expression open, as hcl2 reads it.
_CONTINUES = frozenset("+-*/%&|!=<>?:")


class TfvarsError(ScalerError):
    """A tfvars file cannot be read or edited as asked."""


class TfvarsNotFound(TfvarsError):
    def __init__(self, path: Path) -> None:
        super().__init__(
            f"no {path} found; pass --tfvars PATH, or create it with `scaler tfvars set NAME VALUE`"
        )


class WhichTfvars(TfvarsError):
    """Several tfvars files, and not exactly one of them sets the variable scaler writes."""

    def __init__(self, name: str, files: Sequence[Path], setting: Sequence[Path]) -> None:
        shown = ", ".join(str(f) for f in files)
        if not setting:
            super().__init__(
                f"none of the tfvars files sets {name} ({shown}); add `{name} = ...` to the one "
                "scaler should write"
            )
        else:
            both = " and ".join(str(f) for f in setting)
            super().__init__(
                f"{name} is set in {both}; keep it in one of them, the one scaler should write"
            )


class TfvarsUnparseable(TfvarsError):
    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot parse {path}: {reason}; fix that first, the file was not changed")


class VariableNotFound(TfvarsError):
    def __init__(self, path: Path, name: str, have: list[str], inside: str | None = None) -> None:
        shown = ", ".join(have) or "none"
        hint = f"; {name!r} is a key inside {inside!r}, not a variable" if inside else ""
        super().__init__(f"no variable {name!r} in {path} (have: {shown}){hint}")


class NotTopLevel(TfvarsError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"{name!r} is not a variable name; scaler reads and sets whole top-level "
            "variables (letters, digits, _ and -), use --json to set a map or list"
        )


class BadValue(TfvarsError):
    """A value given on the command line does not fit the type asked for."""


@dataclass(frozen=True)
class Attribute:
    """One top-level `NAME = value` in a tfvars text; offsets index the text."""

    name: str
    line: int
    value_start: int
    value_end: int


@dataclass(frozen=True)
class Change:
    """What `set_tfvar` did: the value's text before (None when added) and after."""

    name: str
    old: str | None
    new: str
    added: bool

    @property
    def changed(self) -> bool:
        """True when the file's text changed."""
        return self.old != self.new


# ---------------------------------------------------------------------------------------------
# Scanning


class _SyntaxProblem(Exception):
    def __init__(self, message: str, at: int) -> None:
        super().__init__(message)
        self.message = message
        self.at = at


class _Scanner:
    """Finds top-level attributes and where their expressions end, token by token."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.n = len(text)

    def line_of(self, at: int) -> int:
        return self.text.count("\n", 0, at) + 1

    def attributes(self) -> list[Attribute]:
        text, found = self.text, []
        i = self.skip_trivia(0, newlines=True)
        while i < self.n:
            ident = _IDENT.match(text, i)
            if ident is None:
                raise _SyntaxProblem(f"unexpected {text[i]!r}", i)
            j = self.skip_trivia(ident.end(), newlines=False)
            if text.startswith("=", j) and not text.startswith("==", j):
                start = self.skip_trivia(j + 1, newlines=False)
                end = self.expression_end(start, ident.group())
                if end == start:
                    raise _SyntaxProblem(f"no value after {ident.group()} =", start)
                found.append(Attribute(ident.group(), self.line_of(i), start, end))
                i = self.after_value(end, ident.group())
            elif j < self.n and (text[j] in '"{' or _IDENT.match(text, j)):
                raise _SyntaxProblem(
                    f"a {ident.group()!r} block is not allowed in a .tfvars file, "
                    "only NAME = value lines are",
                    i,
                )
            else:
                got = repr(text[j]) if j < self.n else "end of file"
                raise _SyntaxProblem(f"expected = after {ident.group()}, got {got}", j)
            i = self.skip_trivia(i, newlines=True)
        return found

    def skip_trivia(self, i: int, *, newlines: bool) -> int:
        text = self.text
        while i < self.n:
            c = text[i]
            if c in " \t\r" or (newlines and c == "\n") or (i == 0 and c == "\ufeff"):
                i += 1
            elif text.startswith("/*", i):
                end = text.find("*/", i + 2)
                if end < 0:
                    raise _SyntaxProblem("a /* comment is never closed", i)
                i = end + 2
            elif newlines and (c == "#" or text.startswith("//", i)):
                end = text.find("\n", i)
                i = self.n if end < 0 else end
            else:
                break
        return i

    def after_value(self, i: int, name: str) -> int:
        """Checks the rest of the line after a value holds only comments."""
        text = self.text
        start_line = self.line_of(i)
        i = self.skip_trivia(i, newlines=False)
        if i >= self.n or text[i] in "\n#" or text.startswith("//", i):
            return i
        if self.line_of(i) != start_line:
            return i  # a /* comment */ ran onto the next line
        raise _SyntaxProblem(f"unexpected {text[i]!r} after the value of {name}", i)

    def expression_end(self, i: int, name: str) -> int:
        text, end, word = self.text, i, i
        stack: list[tuple[str, int]] = []
        last = ""
        while i < self.n:
            c = text[i]
            if c in " \t\r":
                i += 1
            elif c == "\n":
                if not stack and last not in _CONTINUES:
                    break
                i += 1
            elif c == "#" or text.startswith("//", i):
                if not stack:
                    break
                nl = text.find("\n", i)
                i = self.n if nl < 0 else nl
            elif text.startswith("/*", i):
                if not stack:
                    break
                i = self.skip_trivia(i, newlines=False)
            elif c == '"':
                i = end = self.quoted_end(i)
                last = c
            elif (heredoc := _HEREDOC_START.match(text, i)) is not None:
                i = end = self.heredoc_end(heredoc)
                last = '"'
            elif c in "([{":
                stack.append((c, i))
                i = end = i + 1
                last = c
            elif c in ")]}":
                if not stack or "([{"[")]}".index(c)] != stack[-1][0]:
                    raise _SyntaxProblem(f"unexpected {c!r}", i)
                stack.pop()
                i = end = i + 1
                last = c
            elif c == "=" and not stack and last not in "=!<>" and text[i + 1 : i + 2] not in "=>":
                # hcl2 reads `a = 1 b = 2` as two attributes; Terraform refuses it.
                raise _SyntaxProblem(f"unexpected {text[word]!r} after the value of {name}", word)
            else:
                before = text[i - 1]
                if (c.isalnum() or c == "_") and not (before.isalnum() or before in "_-."):
                    word = i
                i = end = i + 1
                last = c
        if stack:
            opener, at = stack[-1]
            raise _SyntaxProblem(f"{opener!r} is never closed", at)
        return end

    def quoted_end(self, i: int) -> int:
        """End of the quoted template starting at i (the opening quote)."""
        text, start = self.text, i
        i += 1
        while i < self.n:
            c = text[i]
            if c == "\\":
                i += 2
            elif c == '"':
                return i + 1
            elif c == "\n":
                break
            elif text.startswith(("$${", "%%{"), i):
                i += 3
            elif text.startswith(("${", "%{"), i):
                i = self.template_end(i + 2)
            else:
                i += 1
        raise _SyntaxProblem("a quoted string is never closed on its line", start)

    def template_end(self, i: int) -> int:
        """End of a ${ ... } sequence whose body starts at i."""
        text, depth, start = self.text, 1, i - 2
        while i < self.n:
            c = text[i]
            if c == '"':
                i = self.quoted_end(i)
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        raise _SyntaxProblem("a ${ sequence is never closed", start)

    def heredoc_end(self, start: re.Match[str]) -> int:
        """End of the heredoc whose opening line matched: just past its closing marker."""
        text, marker, i = self.text, start.group(2), start.end()
        while i < self.n:
            nl = text.find("\n", i)
            line_end = self.n if nl < 0 else nl
            line = text[i:line_end]
            if line.lstrip(" \t") in (marker, marker + "\r"):
                return i + line.index(marker) + len(marker)
            i = line_end + 1
        raise _SyntaxProblem(f"heredoc <<{marker} is never closed", start.start())


# ---------------------------------------------------------------------------------------------
# Values: Python <-> HCL text


def hcl_string(value: str) -> str:
    """A quoted HCL string literal for `value`, escaping quotes, backslashes and templates."""
    out = []
    for c in value:
        if c in '"\\':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif c == "\t":
            out.append("\\t")
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    # "${" and "%{" start template sequences; "$${" and "%%{" are their literal forms.
    return '"' + "".join(out).replace("${", "$${").replace("%{", "%%{") + '"'


def _number_text(value: int | float) -> str:
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        raise BadValue(f"{value} is not a number Terraform can hold; give a finite number")
    text = repr(value)
    # hcl2 reads 1e+20 as an expression, not a number: write it out in full.
    return format(Decimal(text), "f") if "e" in text or "E" in text else text


def hcl_literal(value: object) -> str:
    """HCL expression text for a JSON-like Python value (str, number, bool, None, list, dict)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number_text(value)
    if isinstance(value, str):
        return hcl_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(hcl_literal(item) for item in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise BadValue(f"map key {key!r} is not a string; HCL map keys are strings")
            plain = _PLAIN_KEY.fullmatch(key) and key not in _KEYWORDS
            items.append(f"{key if plain else hcl_string(key)} = {hcl_literal(item)}")
        return "{ " + ", ".join(items) + " }"
    raise BadValue(f"cannot write a {type(value).__name__} into a .tfvars file")


def parse_value(text: str, kind: ValueKind = "string") -> object:
    """The Python value for a command-line VALUE of the given kind."""
    if kind == "string":
        return text
    if kind == "number":
        if not _NUMBER.fullmatch(text.strip()):
            raise BadValue(f"{text!r} is not a number; give digits like 3, -1 or 2.5")
        try:
            number = Decimal(text.strip())
        except InvalidOperation as err:  # pragma: no cover - the pattern admits only numbers
            raise BadValue(f"{text!r} is not a number") from err
        return int(number) if number == number.to_integral_value() else float(number)
    if kind == "bool":
        lowered = text.strip().lower()
        if lowered in ("true", "yes", "on", "1"):
            return True
        if lowered in ("false", "no", "off", "0"):
            return False
        raise BadValue(f"{text!r} is not a bool; give true or false")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise BadValue(
            f"{text!r} is not JSON ({err.msg} at column {err.colno}); "
            """give e.g. '["a", "b"]' or '{"k": 1}'"""
        ) from err


def image_id_from(text: str) -> str:
    """The snapshot id in `12345`, `nyc3:12345` or a Packer artifact_id `sfo2,nyc3:12345`."""
    match = _ARTIFACT_ID.fullmatch(text.strip())
    if match is None:
        raise BadValue(
            f"{text!r} is not an image id; give the snapshot id (12345), region:id (nyc3:12345) "
            "or Packer's artifact_id (sfo2,nyc3:12345)"
        )
    return match.group(1)


def _unescape(body: str) -> str:
    """The value of a quoted HCL string's body (the text between the quotes)."""
    simple = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}
    out, i, n = [], 0, len(body)
    while i < n:
        c = body[i]
        if c == "\\" and i + 1 < n:
            marker = body[i + 1]
            width = {"u": 4, "U": 8}.get(marker, 0)
            digits = body[i + 2 : i + 2 + width]
            if marker in simple:
                out.append(simple[marker])
                i += 2
                continue
            if width and len(digits) == width and all(d in string.hexdigits for d in digits):
                code = int(digits, 16)
                if code <= 0x10FFFF and not 0xD800 <= code < 0xE000:
                    out.append(chr(code))
                    i += 2 + width
                    continue
            out.append(c + marker)
            i += 2
        elif body.startswith(("$${", "%%{"), i):
            out.append(body[i + 1 : i + 3])
            i += 3
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _decode(raw: object) -> object:
    """A Python value from hcl2's view, where strings keep their quotes."""
    if isinstance(raw, str):
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            return _unescape(raw[1:-1])
        return raw  # an expression hcl2 does not evaluate, as "${...}"
    if isinstance(raw, list):
        return [_decode(item) for item in raw]
    if isinstance(raw, dict):
        return {
            str(_decode(key)): _decode(item)
            for key, item in raw.items()
            if not (isinstance(key, str) and key.startswith("__") and key.endswith("__"))
        }
    return raw


def _same(a: object, b: object) -> bool:
    """Equality that does not let True pass for 1 or 1.0 for "1"."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


# ---------------------------------------------------------------------------------------------
# Files


def _parse(text: str, path: Path) -> dict[str, object]:
    """hcl2's view of the file: top-level names to raw values (strings keep their quotes)."""
    try:
        parsed = hcl2.loads(text, serialization_options=_HCL2_OPTIONS)
    except UnexpectedInput as err:
        raise TfvarsUnparseable(path, _lark_reason(err)) from err
    except (LarkError, RuntimeError, ValueError, RecursionError) as err:
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise TfvarsUnparseable(path, f"HCL parser: {first}") from err
    return {str(key): value for key, value in parsed.items()}


def _lark_reason(err: UnexpectedInput) -> str:
    where = f"line {err.line}, column {err.column}"
    if isinstance(err, UnexpectedToken):
        token = err.token
        if token.type == "$END":
            return f"{where}: unexpected end of file (an unclosed bracket, brace or string?)"
        shown = str(token).strip().splitlines()[0][:40] if str(token).strip() else token.type
        if shown == ":":
            return f"{where}: unexpected ':' (old HCL1 `name: value` syntax? write name = value)"
        return f"{where}: unexpected {shown!r}"
    if isinstance(err, UnexpectedCharacters):
        return f"{where}: unexpected {err.char!r}"
    return f"{where}: not valid HCL"  # pragma: no cover - lark raises only the two above here


def _read_text(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError as err:
        raise TfvarsError(f"{path} is a directory; pass the .tfvars file with --tfvars") from err
    except OSError as err:
        raise TfvarsError(f"cannot read {path}: {err.strerror}") from err
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise TfvarsUnparseable(path, f"not UTF-8 text (byte {err.start})") from err


@dataclass(frozen=True)
class _Parsed:
    raw: dict[str, object]
    attributes: dict[str, Attribute]


def _load(text: str, path: Path) -> _Parsed:
    """Parses with hcl2 and with the scanner, and insists that they agree."""
    raw = _parse(text, path)
    scanner = _Scanner(text)
    try:
        found = scanner.attributes()
    except _SyntaxProblem as problem:
        line = scanner.line_of(problem.at)
        raise TfvarsUnparseable(path, f"line {line}: {problem.message}") from problem
    attributes: dict[str, Attribute] = {}
    for attribute in found:
        first = attributes.get(attribute.name)
        if first is not None:
            raise TfvarsUnparseable(
                path,
                f"{attribute.name} is set twice (lines {first.line} and {attribute.line}) "
                "and Terraform refuses that",
            )
        attributes[attribute.name] = attribute
    if list(attributes) != list(raw):
        raise TfvarsUnparseable(
            path,
            f"scaler sees variables ({', '.join(attributes)}) where the HCL parser sees "
            f"({', '.join(raw)})",
        )
    return _Parsed(raw, attributes)


def _top_level_keys_holding(raw: dict[str, object], name: str) -> str | None:
    for top, value in raw.items():
        if isinstance(value, dict) and any(_decode(key) == name for key in value):
            return top
    return None


def read_tfvars(path: Path) -> dict[str, object]:
    """All top-level variables of a tfvars file as Python values."""
    path = Path(path)
    text = _read_text(path)
    if text is None:
        raise TfvarsNotFound(path)
    parsed = _load(text, path)
    return {name: _value_of(parsed, text, name) for name in parsed.raw}


def get_tfvar(path: Path, name: str) -> object:
    """The value of one top-level variable in a tfvars file."""
    path = Path(path)
    text = _read_text(path)
    if text is None:
        raise TfvarsNotFound(path)
    parsed = _load(text, path)
    if name not in parsed.raw:
        raw = parsed.raw
        raise VariableNotFound(path, name, list(raw), _top_level_keys_holding(raw, name))
    return _value_of(parsed, text, name)


def _value_of(parsed: _Parsed, text: str, name: str) -> object:
    value = _decode(parsed.raw[name])
    attribute = parsed.attributes[name]
    source = text[attribute.value_start : attribute.value_end]
    # Terraform keeps a heredoc's last newline; hcl2 drops it.
    if isinstance(value, str) and source.startswith("<<") and source.count("\n") >= 2:
        value += "\n"
    return value


def _newline_of(text: str) -> str:
    crlf = text.count("\r\n")
    return "\r\n" if crlf and crlf >= text.count("\n") - crlf else "\n"


def edit_tfvars_text(text: str, name: str, value: object, *, path: Path) -> tuple[str, Change]:
    """The text with `name` set to `value`, every other byte kept; checked by re-parsing."""
    if not _IDENT.fullmatch(name):
        raise NotTopLevel(name)
    new_value = hcl_literal(value)
    before = _load(text, path) if text else _Parsed({}, {})
    attribute = before.attributes.get(name)
    if attribute is not None:
        old_value = text[attribute.value_start : attribute.value_end]
        new_text = text[: attribute.value_start] + new_value + text[attribute.value_end :]
        change = Change(name, old_value, new_value, added=False)
    else:
        newline = _newline_of(text)
        lead = newline if text and not text.endswith("\n") else ""
        new_text = f"{text}{lead}{name} = {new_value}{newline}"
        change = Change(name, None, new_value, added=True)
    problem = TfvarsError(
        f"setting {name} in {path} would change more than {name} (a bug in scaler); "
        "the file is left untouched, edit it by hand"
    )
    try:
        after = _parse(new_text, path)
    except TfvarsUnparseable as err:
        raise problem from err
    others_before = {k: v for k, v in before.raw.items() if k != name}
    others_after = {k: v for k, v in after.items() if k != name}
    if (
        list(others_before) != list(others_after)
        or others_before != others_after
        or name not in after
        or not _same(_decode(after[name]), value)
    ):
        raise problem
    return new_text, change


def set_tfvar(path: Path, name: str, value: object) -> Change:
    """Set one top-level variable in a tfvars file (created if missing), written atomically."""
    path = Path(path)
    text = _read_text(path)
    new_text, change = edit_tfvars_text(text or "", name, value, path=path)
    if text is not None and new_text == text:
        return change
    try:
        write_atomic(path, new_text.encode("utf-8"))
    except OSError as err:
        raise TfvarsError(f"cannot write {path}: {err.strerror or err}") from err
    return change


def tfvars_holding(files: Sequence[Path], name: str) -> Path:
    """Of the tfvars files Terraform gets, the one that sets `name`: the one scaler writes.

    One file is that file (`name` is added when it lacks it); of several, exactly one must set it.
    A file that does not exist is an error naming it, never created.
    """
    paths = [Path(f) for f in files]
    for path in paths:
        if not path.is_file():
            raise TfvarsNotFound(path)
    if len(paths) == 1:
        return paths[0]
    setting = [p for p in paths if name in _load(_read_text(p) or "", p).raw]
    if len(setting) != 1:
        raise WhichTfvars(name, paths, setting)
    return setting[0]


def parse_hcl(path: Path) -> dict[str, object]:
    """hcl2's raw view of any HCL file (a Packer template, a var file); strings keep quotes."""
    text = _read_text(Path(path))
    if text is None:
        raise TfvarsNotFound(Path(path))
    return _parse(text, Path(path))

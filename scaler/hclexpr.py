"""HCL2 expressions as Packer evaluates them: templates, references, operators, functions.

python-hcl2 (behind scaler.tfvars) parses the file; it hands back expressions as text
(`"${var.x}-a"`, `${format(...)}`), which this module evaluates. The subset is what Packer
templates use: literals, lists, objects, string templates with `${...}`, `var.`, `local.`,
`path.root`, `path.cwd`, indexing, the usual operators, the conditional, and a set of
functions (timestamp, formatdate, format, regex_replace, env, file, yamldecode, ...). Anything
else (`for` expressions, splats, `%{` directives, an unknown function) is refused by name.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaler.errors import ScalerError


class HclError(ScalerError):
    """An expression scaler cannot evaluate, or one that fails."""


@dataclass
class Scope:
    """What references and functions see; locals are evaluated on first use."""

    variables: Mapping[str, Any]
    root: Path
    started: float
    locals_raw: Mapping[str, Any] = field(default_factory=dict)
    locals_done: dict[str, Any] = field(default_factory=dict)
    locals_busy: set[str] = field(default_factory=set)
    allow_vars: bool = True

    def local(self, name: str) -> Any:
        if name in self.locals_done:
            return self.locals_done[name]
        if name not in self.locals_raw:
            have = ", ".join(sorted(self.locals_raw)) or "none"
            raise HclError(f"local.{name} is not defined (have: {have})")
        if name in self.locals_busy:
            raise HclError(f"local.{name} refers to itself")
        self.locals_busy.add(name)
        try:
            value = evaluate(self.locals_raw[name], self)
        finally:
            self.locals_busy.discard(name)
        self.locals_done[name] = value
        return value


def evaluate(raw: Any, scope: Scope) -> Any:
    """The value of one attribute as python-hcl2 gives it (strings keep their quotes)."""
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("${") and text.endswith("}") and _one_interpolation(text):
            return _Parser(text[2:-1], scope).whole()
        return _Parser(text, scope).whole()
    if isinstance(raw, list):
        return [evaluate(item, scope) for item in raw]
    if isinstance(raw, dict):
        return {
            str(evaluate(k, scope) if k.startswith('"') else k): evaluate(v, scope)
            for k, v in raw.items()
            if not (k.startswith("__") and k.endswith("__"))
        }
    return raw


def _one_interpolation(text: str) -> bool:
    # "${a}-${b}" unquoted never comes from hcl2, but check the braces close only at the end
    depth, i, quoted = 0, 0, False
    while i < len(text):
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0 and i != len(text) - 1:
                return False
        i += 1
    return True


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_OPS = ("==", "!=", "<=", ">=", "&&", "||", "<", ">", "+", "-", "*", "/", "%")
_PRECEDENCE = {
    "||": 1,
    "&&": 2,
    "==": 3,
    "!=": 3,
    "<": 4,
    ">": 4,
    "<=": 4,
    ">=": 4,
    "+": 5,
    "-": 5,
    "*": 6,
    "/": 6,
    "%": 6,
}


class _Parser:
    """A scannerless recursive-descent evaluator over one expression's text."""

    def __init__(self, text: str, scope: Scope) -> None:
        self.text = text
        self.i = 0
        self.scope = scope

    def whole(self) -> Any:
        value = self.expr()
        self.ws()
        if self.i != len(self.text):
            self.fail(f"unexpected {self.text[self.i :][:20]!r}")
        return value

    def fail(self, why: str) -> None:
        raise HclError(f"{why} in expression {self.text.strip()[:80]!r}")

    def ws(self) -> None:
        while self.i < len(self.text):
            c = self.text[self.i]
            if c.isspace():
                self.i += 1
            elif self.text.startswith(("#", "//"), self.i):
                end = self.text.find("\n", self.i)
                self.i = len(self.text) if end < 0 else end
            elif self.text.startswith("/*", self.i):
                end = self.text.find("*/", self.i)
                self.i = len(self.text) if end < 0 else end + 2
            else:
                break

    def peek(self, s: str) -> bool:
        self.ws()
        return self.text.startswith(s, self.i)

    def take(self, s: str) -> bool:
        if self.peek(s):
            self.i += len(s)
            return True
        return False

    def need(self, s: str) -> None:
        if not self.take(s):
            self.fail(f"expected {s!r}")

    def expr(self) -> Any:
        cond = self.binary(0)
        if self.take("?"):
            yes = self.expr()
            self.need(":")
            no = self.expr()
            return yes if _truthy(cond, self) else no
        return cond

    def binary(self, floor: int) -> Any:
        left = self.unary()
        while True:
            self.ws()
            op = next((o for o in _OPS if self.text.startswith(o, self.i)), None)
            if op is None or _PRECEDENCE[op] <= floor:
                return left
            self.i += len(op)
            right = self.binary(_PRECEDENCE[op])
            left = self.apply(op, left, right)

    def apply(self, op: str, a: Any, b: Any) -> Any:
        if op == "==":
            return a == b
        if op == "!=":
            return a != b
        if op in ("&&", "||"):
            p, q = _truthy(a, self), _truthy(b, self)
            return (p and q) if op == "&&" else (p or q)
        x, y = _number(a, self), _number(b, self)
        if op == "+":
            return x + y
        if op == "-":
            return x - y
        if op == "*":
            return x * y
        if op == "/":
            return x / y
        if op == "%":
            return x % y
        if op == "<":
            return x < y
        if op == ">":
            return x > y
        if op == "<=":
            return x <= y
        return x >= y

    def unary(self) -> Any:
        if self.take("!"):
            return not _truthy(self.unary(), self)
        if self.peek("-") and not self.peek("->"):
            self.i += 1
            return -_number(self.unary(), self)
        return self.postfix(self.primary())

    def postfix(self, value: Any) -> Any:
        while True:
            if self.peek("[*]") or self.peek(".*"):
                self.fail("splat expressions are not supported by scaler")
            if self.take("["):
                key = self.expr()
                self.need("]")
                value = _index(value, key, self)
            elif self.peek(".") and not self.peek(".."):
                self.i += 1
                self.ws()
                m = _IDENT.match(self.text, self.i) or _NUMBER.match(self.text, self.i)
                if m is None:
                    self.fail("expected a name after '.'")
                assert m is not None
                self.i = m.end()
                value = _index(value, m.group(0), self)
            else:
                return value

    def primary(self) -> Any:
        self.ws()
        if self.i >= len(self.text):
            self.fail("unexpected end")
        c = self.text[self.i]
        if c == '"':
            return self.template()
        if c == "(":
            self.i += 1
            value = self.expr()
            self.need(")")
            return value
        if c == "[":
            self.i += 1
            if self.peek("for ") or self.peek("for\t"):
                self.fail("'for' expressions are not supported by scaler")
            items: list[Any] = []
            while not self.take("]"):
                items.append(self.expr())
                if not self.take(","):
                    self.need("]")
                    break
            return items
        if c == "{":
            self.i += 1
            if self.peek("for ") or self.peek("for\t"):
                self.fail("'for' expressions are not supported by scaler")
            obj: dict[str, Any] = {}
            while not self.take("}"):
                self.ws()
                m = _IDENT.match(self.text, self.i)
                if m and not self.text.startswith("(", m.end()):
                    self.i = m.end()
                    key = m.group(0)
                else:
                    key = str(self.expr())
                if not (self.take("=") or self.take(":")):
                    self.fail("expected '=' in an object")
                obj[key] = self.expr()
                self.take(",")
            return obj
        if self.text.startswith("<<", self.i):
            self.fail("heredocs inside expressions are not supported by scaler")
        m = _NUMBER.match(self.text, self.i)
        if m:
            self.i = m.end()
            text = m.group(0)
            return float(text) if any(ch in text for ch in ".eE") else int(text)
        m = _IDENT.match(self.text, self.i)
        if m is None:
            self.fail(f"unexpected {c!r}")
        assert m is not None
        name = m.group(0)
        self.i = m.end()
        if name in ("true", "false"):
            return name == "true"
        if name == "null":
            return None
        if self.peek("("):
            self.i += 1
            args: list[Any] = []
            while not self.take(")"):
                args.append(self.expr())
                if self.take("..."):
                    self.fail("argument expansion (...) is not supported by scaler")
                if not self.take(","):
                    self.need(")")
                    break
            return self.call(name, args)
        return self.reference(name)

    def reference(self, name: str) -> Any:
        scope = self.scope
        self.ws()
        if name in ("var", "local", "path") and self.take("."):
            m = _IDENT.match(self.text, self.i)
            if m is None:
                self.fail(f"expected a name after '{name}.'")
            assert m is not None
            self.i = m.end()
            attr = m.group(0)
            if name == "var":
                if not scope.allow_vars:
                    self.fail("variables are not allowed here")
                if attr not in scope.variables:
                    have = ", ".join(sorted(scope.variables)) or "none"
                    raise HclError(f"var.{attr} is not declared (have: {have})")
                return scope.variables[attr]
            if name == "local":
                return scope.local(attr)
            if attr == "root":
                return str(scope.root)
            if attr == "cwd":
                return os.getcwd()
            self.fail(f"path.{attr} is not supported by scaler (have: path.root, path.cwd)")
        self.fail(f"the reference {name!r} is not supported by scaler (have: var., local., path.)")
        return None

    def template(self) -> str:
        """A quoted string with ${...} interpolations (the opening quote at self.i)."""
        self.i += 1
        out: list[str] = []
        text = self.text
        while True:
            if self.i >= len(text):
                self.fail("unterminated string")
            c = text[self.i]
            if c == '"':
                self.i += 1
                return "".join(out)
            if c == "\\":
                nxt = text[self.i + 1 : self.i + 2]
                simple = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}
                if nxt in simple:
                    out.append(simple[nxt])
                    self.i += 2
                elif nxt in ("u", "U"):
                    width = 4 if nxt == "u" else 8
                    out.append(chr(int(text[self.i + 2 : self.i + 2 + width], 16)))
                    self.i += 2 + width
                else:
                    out.append(c)
                    self.i += 1
            elif text.startswith(("$${", "%%{"), self.i):
                out.append(text[self.i + 1 : self.i + 3])
                self.i += 3
            elif text.startswith("${", self.i):
                self.i += 2
                self.take("~")
                value = self.expr()
                self.take("~")
                self.need("}")
                out.append(_as_string(value, self))
            elif text.startswith("%{", self.i):
                self.fail("template directives (%{...}) are not supported by scaler")
            else:
                out.append(c)
                self.i += 1

    def call(self, name: str, args: list[Any]) -> Any:
        func = _FUNCTIONS.get(name)
        if func is None:
            self.fail(f"the function {name}() is not supported by scaler")
        assert func is not None
        try:
            return func(self.scope, *args)
        except HclError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, re.error, OSError) as err:
            self.fail(f"{name}() failed ({type(err).__name__}: {' '.join(str(err).split())})")
            return None


def _truthy(value: Any, p: _Parser) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return bool(value == "true")
    p.fail(f"{value!r} is not a bool")
    return False


def _number(value: Any, p: _Parser) -> float | int:
    if isinstance(value, bool):
        p.fail(f"{value!r} is not a number")
    if isinstance(value, int | float):
        return value
    try:
        return int(str(value))
    except ValueError:
        try:
            return float(str(value))
        except ValueError:
            p.fail(f"{value!r} is not a number")
    return 0


def _index(value: Any, key: Any, p: _Parser) -> Any:
    if isinstance(value, list):
        try:
            return value[int(key)]
        except (ValueError, IndexError):
            p.fail(f"no element {key!r} in a list of {len(value)}")
    if isinstance(value, dict):
        if str(key) not in value:
            p.fail(f"no key {key!r} (have: {', '.join(sorted(map(str, value))) or 'none'})")
        return value[str(key)]
    p.fail(f"cannot index {type(value).__name__} with {key!r}")
    return None


def _as_string(value: Any, p: _Parser | None = None) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    if value is None:
        return ""
    if p is not None:
        p.fail(f"a {type(value).__name__} cannot go into a string")
    return json.dumps(value)


# --- functions ---------------------------------------------------------------------------------

_FORMATDATE = [
    ("YYYY", "%Y"),
    ("YY", "%y"),
    ("MMMM", "%B"),
    ("MMM", "%b"),
    ("MM", "%m"),
    ("M", "-m"),
    ("DD", "%d"),
    ("D", "-d"),
    ("EEEE", "%A"),
    ("EEE", "%a"),
    ("hh", "%H"),
    ("h", "-H"),
    ("HH", "%I"),
    ("H", "-I"),
    ("AA", "%p"),
    ("aa", "-p"),
    ("mm", "%M"),
    ("m", "-M"),
    ("ss", "%S"),
    ("s", "-S"),
    ("ZZZZZ", "+00:00"),
    ("ZZZZ", "+0000"),
    ("ZZZ", "UTC"),
    ("Z", "Z"),
]


def _parse_rfc3339(text: str) -> float:
    m = re.fullmatch(
        r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)", str(text)
    )
    if m is None:
        raise ValueError(f"{text!r} is not an RFC 3339 timestamp")
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    import calendar

    at = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
    zone = m.group(7)
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        at -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return float(at)


def formatdate(spec: str, timestamp: str) -> str:
    """Terraform's formatdate() (UTC)."""
    tm = time.gmtime(_parse_rfc3339(timestamp))
    out, i = [], 0
    while i < len(spec):
        if spec[i] == "'":
            end = spec.find("'", i + 1)
            if end < 0:
                raise ValueError("unterminated quote in the format")
            out.append(spec[i + 1 : end] or "'")
            i = end + 1
            continue
        for token, fmt in _FORMATDATE:
            if spec.startswith(token, i):
                if fmt.startswith("%"):
                    out.append(time.strftime(fmt, tm))
                elif fmt.startswith("-"):
                    text = time.strftime("%" + fmt[1], tm)
                    out.append(text.lower() if fmt[1] == "p" else str(int(text)))
                else:
                    out.append(fmt)
                i += len(token)
                break
        else:
            if spec[i].isalpha():
                raise ValueError(f"unsupported letter {spec[i]!r} in the format")
            out.append(spec[i])
            i += 1
    return "".join(out)


def _format(scope: Scope, fmt: str, *args: Any) -> str:
    values = iter(args)

    def one(m: re.Match[str]) -> str:
        flags, verb = m.group(1), m.group(2)
        if verb == "%":
            return "%"
        value = next(values)
        if verb in ("s", "v"):
            text = json.dumps(value) if isinstance(value, list | dict) else _as_string(value)
            return ("%" + flags + "s") % text
        if verb == "q":
            return json.dumps(_as_string(value))
        if verb == "d":
            return ("%" + flags + "d") % int(value)
        if verb == "f":
            return ("%" + flags + "f") % float(value)
        return "true" if value else "false"

    return re.sub(r"%([-+# 0]*\d*(?:\.\d+)?)([svqdft%])", one, fmt)


def _go_replacement(repl: str) -> str:
    # Go's $1 / ${name} -> Python's \g<1> / \g<name>
    return re.sub(r"\$\{?(\w+)\}?", lambda m: f"\\g<{m.group(1)}>", repl.replace("\\", "\\\\"))


def _replace(scope: Scope, text: str, old: str, new: str) -> str:
    if len(old) > 1 and old.startswith("/") and old.endswith("/"):
        return re.sub(old[1:-1], _go_replacement(new), text)
    return text.replace(old, new)


def _file(scope: Scope, path: str) -> str:
    p = Path(path).expanduser()
    return (p if p.is_absolute() else Path.cwd() / p).read_text()


def _yamldecode(scope: Scope, text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def _coalesce(scope: Scope, *args: Any) -> Any:
    for arg in args:
        if arg not in (None, ""):
            return arg
    raise ValueError("no non-empty argument")


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "timestamp": lambda s: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s.started)),
    "formatdate": lambda s, spec, ts: formatdate(spec, ts),
    "format": _format,
    "regex_replace": lambda s, text, pattern, repl: re.sub(pattern, _go_replacement(repl), text),
    "replace": _replace,
    "env": lambda s, name: os.environ.get(name, ""),
    "file": _file,
    "yamldecode": _yamldecode,
    "jsondecode": lambda s, text: json.loads(text),
    "jsonencode": lambda s, value: json.dumps(value, separators=(",", ":")),
    "lower": lambda s, text: str(text).lower(),
    "upper": lambda s, text: str(text).upper(),
    "title": lambda s, text: str(text).title(),
    "trimspace": lambda s, text: str(text).strip(),
    "chomp": lambda s, text: str(text).rstrip("\r\n"),
    "trimprefix": lambda s, text, p: str(text).removeprefix(p),
    "trimsuffix": lambda s, text, p: str(text).removesuffix(p),
    "join": lambda s, sep, items: str(sep).join(_as_string(i) for i in items),
    "split": lambda s, sep, text: str(text).split(sep),
    "concat": lambda s, *lists: [item for items in lists for item in items],
    "length": lambda s, value: len(value),
    "element": lambda s, items, i: items[int(i) % len(items)],
    "lookup": lambda s, m, k, *d: m[k] if k in m or not d else d[0],
    "merge": lambda s, *maps: {k: v for m in maps for k, v in m.items()},
    "contains": lambda s, items, v: v in items,
    "coalesce": _coalesce,
    "tostring": lambda s, v: _as_string(v),
    "tonumber": lambda s, v: float(v) if "." in str(v) else int(v),
    "substr": lambda s, text, off, n: str(text)[int(off) : int(off) + int(n) if n >= 0 else None],
    "abspath": lambda s, p: str(Path(p).absolute()),
    "basename": lambda s, p: os.path.basename(p),
    "dirname": lambda s, p: os.path.dirname(p),
    "pathexpand": lambda s, p: os.path.expanduser(p),
    "uuidv4": lambda s: str(uuid.uuid4()),
}

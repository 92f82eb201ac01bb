"""scaler tfvars: edits change only the value's bytes, over every real-world .tfvars file."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import need, shared_files

from scaler import tfvars as tfvars_mod
from scaler.tfvars import (
    Change,
    TfvarsError,
    get_tfvar,
    hcl_literal,
    image_id_from,
    read_tfvars,
    set_tfvar,
)

REALWORLD = "tfvars/realworld"
FIXTURES = f"{REALWORLD}/jordanst3wart__hcl__parser_fixtures"
FILES = shared_files(REALWORLD, "*.tfvars*") + shared_files(FIXTURES, "*.tfvars")
# Read from the file: line 4 opens `resource "aws_instance" "example" {`, a block, which a
# .tfvars may not hold (Terraform: Unexpected "resource" block). hcl2 accepts it; scaler refuses.
REFUSED = {"block.tfvars": 4}
EDITABLE = [p for p in FILES if p.name not in REFUSED]
# A value with every character that needs escaping in an HCL string.
TRICKY = 'v2 "q" \\ ${var.x} %{ if y } $${z} é\n\ttab'


def _ids(path: Path) -> str:
    return path.name


def _run(*args: str, cwd: Path) -> tuple[int, str, str]:
    from scaler.cli import main

    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(main, list(args), prog_name="scaler")
    finally:
        os.chdir(old)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def _copy(src: Path, tmp_path: Path, *, crlf: bool = False) -> Path:
    data = src.read_bytes()
    if crlf:
        data = data.replace(b"\n", b"\r\n")
    target = tmp_path / "terraform.tfvars"
    target.write_bytes(data)
    return target


def test_the_realworld_files_are_all_there(shared_data: Path) -> None:
    assert len(FILES) >= 19
    assert set(REFUSED) <= {p.name for p in FILES}


# ----------------------------------------------------------------------------------------------
# Every variable of every real file


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
@pytest.mark.parametrize("src", EDITABLE, ids=_ids)
def test_setting_each_variable_changes_exactly_its_value(
    src: Path, crlf: bool, tmp_path: Path
) -> None:
    target = _copy(src, tmp_path, crlf=crlf)
    original = target.read_bytes().decode()
    values = read_tfvars(target)
    assert values, f"{src.name} has variables"
    for name in values:
        target.write_text(original, newline="")
        change = set_tfvar(target, name, TRICKY)
        after = target.read_bytes().decode()
        assert change.name == name and not change.added and change.old is not None
        # The old value's text sits right after `NAME =` at the start of a line ...
        head = re.search(
            rf"(?m)^{re.escape(name)}[ \t]*=[ \t]*(?={re.escape(change.old)})", original
        )
        assert head is not None, name
        start = head.end()
        end = start + len(change.old)
        # ... is followed only by blanks and a comment up to the end of its line ...
        assert re.match(r"[ \t]*(?:(?:#|//).*)?(?:\r?\n|$)", original[end:]), name
        # ... and is the only thing that changed.
        assert after == original[:start] + change.new + original[end:]
        assert change.new == hcl_literal(TRICKY)
        assert read_tfvars(target) == {**values, name: TRICKY}
        assert get_tfvar(target, name) == TRICKY
        assert sorted(p.name for p in tmp_path.iterdir()) == ["terraform.tfvars"]


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
@pytest.mark.parametrize("src", EDITABLE, ids=_ids)
def test_adding_a_variable_appends_one_line_in_the_files_style(
    src: Path, crlf: bool, tmp_path: Path
) -> None:
    target = _copy(src, tmp_path, crlf=crlf)
    original = target.read_bytes()
    values = read_tfvars(target)
    change = set_tfvar(target, "image_slug", "118226535")
    newline = b"\r\n" if crlf else b"\n"
    lead = b"" if original.endswith(b"\n") else newline
    assert target.read_bytes() == original + lead + b'image_slug = "118226535"' + newline
    assert change == Change("image_slug", None, '"118226535"', added=True)
    assert read_tfvars(target) == {**values, "image_slug": "118226535"}


@pytest.mark.parametrize("src", EDITABLE, ids=_ids)
def test_get_matches_read_and_setting_the_same_value_keeps_every_value(
    src: Path, tmp_path: Path
) -> None:
    target = _copy(src, tmp_path)
    values = read_tfvars(target)
    for name, value in values.items():
        assert get_tfvar(target, name) == value
        before = target.stat()
        change = set_tfvar(target, name, value)
        after = target.stat()
        assert read_tfvars(target) == values
        if not change.changed:  # the same text: the file is not even rewritten
            assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


# Spans read off the files by eye: what `set` replaces for a few interesting variables.
SPANS = [
    ("dellabeneta__terraform-deepseek-r1__env-tst.tfvars", "droplet_count", "2"),
    (
        "dellabeneta__terraform-deepseek-r1__env-tst.tfvars",
        "ssh_key_path",
        '"~/.ssh/tst/id_ed25519.pub"',
    ),
    (
        "harshada7301__tf__terraform.tfvars",
        "instance_tags_dev",
        '{ \n   Environment = "Development"\n  }',
    ),
    ("lists.tfvars", "mixed_values", '[\n  1,\n  "two", # hi\n  true,\n]'),
    (
        "single_line_nested_map.tfvars",
        "instance_settings",
        "{ small = { cpu = 2, memory = 4, disk   = 50 }}",
    ),
    ("petrem__learn__terraform.tfvars", "learn_settings", None),
]


@pytest.mark.parametrize(("file", "name", "span"), SPANS, ids=[f"{f}:{n}" for f, n, _ in SPANS])
def test_known_spans(file: str, name: str, span: str | None, tmp_path: Path) -> None:
    matches = [p for p in FILES if p.name == file]
    need(bool(matches), f"{file} is absent")
    target = _copy(matches[0], tmp_path)
    text = target.read_text()
    if span is None:  # the first map of petrem's file runs from its `{` to the `}` on line 6
        span = text[text.index("{") : text.index("}") + 1]
    assert set_tfvar(target, name, "x").old == span


def test_heredocs_are_replaced_whole_and_read_as_terraform_reads_them(tmp_path: Path) -> None:
    matches = [p for p in FILES if p.name == "jordanst3wart__hcl__heredoc.tfvars"]
    need(bool(matches), "the heredoc fixture is absent")
    target = _copy(matches[0], tmp_path)
    text = target.read_text()
    body = '#!/bin/bash\necho "Hello, World!"\nyum update -y\nyum install -y httpd\n'
    body += "systemctl start httpd\nsystemctl enable httpd\n"
    # Terraform keeps the last newline of a heredoc (checked with terraform console).
    assert read_tfvars(target) == {"user_data2": body, "user_data": body}
    change = set_tfvar(target, "user_data", "#!/bin/sh\n")
    assert change.old is not None
    assert change.old.startswith("<<-EOF\n  #!/bin/bash") and change.old.endswith("\nEOF")
    assert target.read_text() == text.replace(change.old, '"#!/bin/sh\\n"')


def test_all_three_comment_kinds_alignment_and_no_final_newline_survive(tmp_path: Path) -> None:
    text = (
        "/* header\n   over two lines */\n"
        'region     = "nyc3" # where\n'
        'image_slug = "111" // the snapshot\n'
        "size       = /* not here */\n"
        '  "s-1vcpu-1gb"\n'
        "count      = 3 /* inline */ # and more\n"
        'tags = {\n  // inside\n  role = "web" /* x */\n}'
    )
    target = tmp_path / "terraform.tfvars"
    target.write_text(text)
    with pytest.raises(TfvarsError):  # hcl2 reads no comment between = and the value
        read_tfvars(target)
    text = text.replace("/* not here */\n  ", "")
    target.write_text(text)
    set_tfvar(target, "image_slug", "222")
    set_tfvar(target, "count", 4)
    set_tfvar(target, "tags", {"role": "db"})
    assert target.read_text() == (
        text.replace('"111"', '"222"')
        .replace("= 3 /*", "= 4 /*")
        .replace('{\n  // inside\n  role = "web" /* x */\n}', '{ role = "db" }')
    )


# ----------------------------------------------------------------------------------------------
# Files that cannot be edited are refused and left as they were


def _assert_untouched(target: Path, data: bytes, stat: os.stat_result) -> None:
    now = target.stat()
    assert target.read_bytes() == data
    assert (now.st_ino, now.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


@pytest.mark.parametrize("src", [p for p in FILES if p.name in REFUSED], ids=_ids)
def test_a_file_with_a_block_is_refused(src: Path, tmp_path: Path) -> None:
    target = _copy(src, tmp_path)
    line = REFUSED[src.name]
    assert target.read_text().splitlines()[line - 1].startswith("resource ")
    data, stat = target.read_bytes(), target.stat()
    code, out, err = _run("tfvars", "set", "key", "v", cwd=tmp_path)
    assert (code, out) == (1, "")
    assert err == (
        f"Error: cannot parse terraform.tfvars: line {line}: a 'resource' block is not allowed "
        "in a .tfvars file, only NAME = value lines are; fix that first, the file was not changed\n"
    )
    _assert_untouched(target, data, stat)


def test_legacy_hcl1_colon_syntax_is_refused_with_the_parsers_reason(tmp_path: Path) -> None:
    matches = [p for p in FILES if p.name == "different_types.tfvars"]
    need(bool(matches), "different_types.tfvars is absent")
    # The fixture documents HCL1's `foo : "bar"` in a comment on line 14; make it real.
    data = matches[0].read_bytes()
    assert data.splitlines()[13] == b'# foo : "bar"'
    target = tmp_path / "terraform.tfvars"
    target.write_bytes(data.replace(b'# foo : "bar"', b'foo : "bar"'))
    data, stat = target.read_bytes(), target.stat()
    code, out, err = _run("tfvars", "set", "int", "4", "--number", cwd=tmp_path)
    assert (code, out) == (1, "")
    assert err == (
        "Error: cannot parse terraform.tfvars: line 14, column 4: unexpected ':' "
        "(old HCL1 `name: value` syntax? write name = value); fix that first, "
        "the file was not changed\n"
    )
    _assert_untouched(target, data, stat)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            'a = "open\n',
            "line 1, column 6: unexpected end of file (an unclosed bracket, brace or string?)",
        ),
        (
            "a = [1,\n",
            "line 2, column 1: unexpected end of file (an unclosed bracket, brace or string?)",
        ),
        ("a = 1 b = 2\n", "line 1: unexpected 'b' after the value of a"),
        ("a = 1\nb = 2\na = 3\n", "a is set twice (lines 1 and 3) and Terraform refuses that"),
        ("a = <<EOF\nx\n", "line 1, column 5: unexpected '<<EOF'"),
    ],
    ids=["unclosed-string", "unclosed-list", "two-on-a-line", "duplicate", "open-heredoc"],
)
def test_broken_files_are_refused(text: str, reason: str, tmp_path: Path) -> None:
    target = tmp_path / "terraform.tfvars"
    target.write_text(text)
    data, stat = target.read_bytes(), target.stat()
    with pytest.raises(TfvarsError) as caught:
        set_tfvar(target, "a", "x")
    assert str(caught.value) == (
        f"cannot parse {target}: {reason}; fix that first, the file was not changed"
    )
    _assert_untouched(target, data, stat)


def test_a_wrong_span_is_caught_by_reparsing_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only a scanner bug reaches this check; simulate one that cuts values a character short.
    real_end = tfvars_mod._Scanner.expression_end
    monkeypatch.setattr(
        tfvars_mod._Scanner, "expression_end", lambda self, i, name: real_end(self, i, name) - 1
    )
    monkeypatch.setattr(tfvars_mod._Scanner, "after_value", lambda self, i, name: i + 1)
    target = tmp_path / "terraform.tfvars"
    target.write_text('image_slug = "111"\nregion = "nyc3"\n')
    data, stat = target.read_bytes(), target.stat()
    code, out, err = _run("tfvars", "set", "image_slug", "222", cwd=tmp_path)
    assert (code, out) == (1, "")
    assert err == (
        "Error: setting image_slug in terraform.tfvars would change more than image_slug "
        "(a bug in scaler); the file is left untouched, edit it by hand\n"
    )
    _assert_untouched(target, data, stat)


# ----------------------------------------------------------------------------------------------
# Terraform itself reads what scaler reads and writes


def _terraform_values(var_file: Path, names: list[str], work: Path) -> dict[str, object]:
    terraform = shutil.which("terraform")
    need(terraform is not None, "no terraform binary on PATH")
    assert terraform is not None
    work.mkdir(exist_ok=True)
    (work / "main.tf").write_text("".join(f'variable "{n}" {{}}\n' for n in names))
    pairs = ", ".join(f'"{n}" = var.{n}' for n in names)
    # base64 keeps the console's own string quoting out of the way.
    result = subprocess.run(
        [terraform, "console", f"-var-file={var_file}"],
        input=f"base64encode(jsonencode({{{pairs}}}))\n",
        cwd=work,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    decoded: dict[str, object] = json.loads(base64.b64decode(json.loads(result.stdout.strip())))
    return decoded


# Terraform refuses petrem's file: "Variables not allowed" (0.8-era "${...}" on line 8).
TERRAFORM_READS = [p for p in EDITABLE if p.name != "petrem__learn__terraform.tfvars"]


@pytest.mark.parametrize("src", TERRAFORM_READS, ids=_ids)
def test_values_match_terraform_before_and_after_an_edit(src: Path, tmp_path: Path) -> None:
    target = _copy(src, tmp_path)
    values = read_tfvars(target)
    assert _terraform_values(target, list(values), tmp_path / "tf") == values
    name = next(iter(values))
    set_tfvar(target, name, TRICKY)
    set_tfvar(target, "image_slug", "118226535")
    expected = {**values, name: TRICKY, "image_slug": "118226535"}
    assert _terraform_values(target, list(expected), tmp_path / "tf") == expected


def test_every_kind_of_value_written_reads_back_the_same_in_terraform(tmp_path: Path) -> None:
    values: dict[str, object] = {
        "s": 'a"b\\c ${x} %{y} $${z} é \n\t\r \x01 \x7f',
        "empty": "",
        "n": 1.5,
        "big": 1e20,
        "i": -3,
        "b": True,
        "z": None,
        "l": [1, "two", [], {}],
        "m": {"a-b": 1, "true": "t", "x y": {"k": [None]}, "plain_key": False},
    }
    target = tmp_path / "terraform.tfvars"
    for name, value in values.items():
        set_tfvar(target, name, value)
    assert read_tfvars(target) == values
    assert _terraform_values(target, list(values), tmp_path / "tf") == values


# ----------------------------------------------------------------------------------------------
# Library details


def test_hcl_literal_escapes_and_shapes() -> None:
    assert hcl_literal('say "hi" \\ ${a} %{b}\n') == '"say \\"hi\\" \\\\ $${a} %%{b}\\n"'
    assert (
        hcl_literal({"k": [1, 2.5, None, True], "k-2": {}})
        == '{ k = [1, 2.5, null, true], "k-2" = {} }'
    )
    assert hcl_literal(1e20) == "100000000000000000000"
    with pytest.raises(TfvarsError, match="not a number Terraform can hold"):
        hcl_literal(float("nan"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("12345", "12345"), ("nyc3:12345", "12345"), ("sfo2,nyc3:12345", "12345"), (" 7 ", "7")],
)
def test_image_id_from_accepts_ids_and_artifact_ids(text: str, expected: str) -> None:
    assert image_id_from(text) == expected


@pytest.mark.parametrize("text", ["", "nyc3:", "nyc3:abc", "ubuntu-22-04-x64", "nyc3:1:2", "1.5"])
def test_image_id_from_rejects_anything_else(text: str) -> None:
    with pytest.raises(TfvarsError) as caught:
        image_id_from(text)
    assert str(caught.value) == (
        f"{text!r} is not an image id; give the snapshot id (12345), region:id (nyc3:12345) "
        "or Packer's artifact_id (sfo2,nyc3:12345)"
    )


def test_set_creates_a_missing_file_with_the_one_variable(tmp_path: Path) -> None:
    target = tmp_path / "new.tfvars"
    change = set_tfvar(target, "image_slug", "1")
    assert change == Change("image_slug", None, '"1"', added=True)
    assert target.read_text() == 'image_slug = "1"\n'


def test_set_keeps_a_private_mode(tmp_path: Path) -> None:
    target = tmp_path / "terraform.tfvars"
    target.write_text('do_token = "x"\nimage_slug = "1"\n')
    target.chmod(0o600)
    set_tfvar(target, "image_slug", "2")
    assert (target.stat().st_mode & 0o777, target.read_text()) == (
        0o600,
        'do_token = "x"\nimage_slug = "2"\n',
    )


def test_set_into_a_missing_directory_says_so(tmp_path: Path) -> None:
    with pytest.raises(TfvarsError) as caught:
        set_tfvar(tmp_path / "nope" / "terraform.tfvars", "a", "b")
    assert str(caught.value) == (
        f"cannot write {tmp_path / 'nope' / 'terraform.tfvars'}: No such file or directory"
    )


# ----------------------------------------------------------------------------------------------
# The command line


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "terraform.tfvars").write_text(
        '# the tutorial\nimage_slug    = "1234567"\ndroplet_count = 2\n'
        'tags          = ["web"]\nsettings = {\n  image = "x"\n}\n'
    )
    return tmp_path


def test_cli_get_prints_strings_raw_and_the_rest_as_json(project: Path) -> None:
    assert _run("tfvars", "get", "image_slug", cwd=project) == (0, "1234567\n", "")
    assert _run("tfvars", "get", "image_slug", "--json", cwd=project) == (0, '"1234567"\n', "")
    assert _run("tfvars", "get", "droplet_count", cwd=project) == (0, "2\n", "")
    assert _run("tfvars", "get", "tags", cwd=project) == (0, '["web"]\n', "")


def test_cli_get_unknown_variable_lists_the_known_ones(project: Path) -> None:
    assert _run("tfvars", "get", "x", cwd=project) == (
        1,
        "",
        "Error: no variable 'x' in terraform.tfvars "
        "(have: image_slug, droplet_count, tags, settings)\n",
    )
    code, _, err = _run("tfvars", "get", "image", cwd=project)
    assert (code, err) == (
        1,
        "Error: no variable 'image' in terraform.tfvars "
        "(have: image_slug, droplet_count, tags, settings); "
        "'image' is a key inside 'settings', not a variable\n",
    )


def test_cli_get_on_a_missing_file(tmp_path: Path) -> None:
    assert _run("tfvars", "get", "a", "--tfvars", "prod.tfvars", cwd=tmp_path) == (
        1,
        "",
        "Error: no prod.tfvars found; pass --tfvars PATH, "
        "or create it with `scaler tfvars set NAME VALUE`\n",
    )


def test_cli_old_option_name_still_works_with_a_note(tmp_path: Path) -> None:
    (tmp_path / "prod.tfvars").write_text('image_slug = "42"\n')
    assert _run("tfvars", "get", "image_slug", "--var-file", "prod.tfvars", cwd=tmp_path) == (
        0,
        "42\n",
        "Warning: --var-file is deprecated here; use --tfvars FILE\n",
    )


def test_cli_set_takes_a_packer_artifact_id_for_image_slug(project: Path) -> None:
    assert _run("tfvars", "set", "image_slug", "sfo2,nyc3:118226535", cwd=project) == (
        0,
        'image_slug = "118226535" (was "1234567")\n',
        "image_slug: using snapshot id 118226535 from sfo2,nyc3:118226535\n",
    )
    assert 'image_slug    = "118226535"\n' in (project / "terraform.tfvars").read_text()
    assert _run("tfvars", "set", "image_slug", "118226535", cwd=project) == (
        0,
        'image_slug = "118226535" (unchanged)\n',
        "",
    )
    code, out, err = _run("tfvars", "set", "image_slug", "nyc3:latest", cwd=project)
    assert (code, out) == (1, "")
    assert err.startswith("Error: 'nyc3:latest' is not an image id; give the snapshot id")


def test_cli_set_types(project: Path) -> None:
    assert _run("tfvars", "set", "droplet_count", "--number", "5", cwd=project)[:2] == (
        0,
        "droplet_count = 5 (was 2)\n",
    )
    assert _run("tfvars", "set", "monitoring", "--bool", "true", cwd=project)[:2] == (
        0,
        "monitoring = true (added to terraform.tfvars)\n",
    )
    assert _run("tfvars", "set", "tags", "--json", '["web", "blue"]', cwd=project)[:2] == (
        0,
        'tags = ["web", "blue"] (was ["web"])\n',
    )
    assert _run("tfvars", "set", "--number", "offset", "--", "-1", cwd=project)[:2] == (
        0,
        "offset = -1 (added to terraform.tfvars)\n",
    )
    assert (project / "terraform.tfvars").read_text() == (
        '# the tutorial\nimage_slug    = "1234567"\ndroplet_count = 5\n'
        'tags          = ["web", "blue"]\nsettings = {\n  image = "x"\n}\n'
        "monitoring = true\noffset = -1\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--number", "three"), "'three' is not a number; give digits like 3, -1 or 2.5"),
        (("--bool", "maybe"), "'maybe' is not a bool; give true or false"),
        (
            ("--json", "[1,"),
            "'[1,' is not JSON (Expecting value at column 4); "
            """give e.g. '["a", "b"]' or '{"k": 1}'""",
        ),
    ],
    ids=["number", "bool", "json"],
)
def test_cli_set_rejects_values_of_the_wrong_kind(
    project: Path, args: tuple[str, str], message: str
) -> None:
    before = (project / "terraform.tfvars").read_bytes()
    assert _run("tfvars", "set", "x", *args, cwd=project) == (1, "", f"Error: {message}\n")
    assert (project / "terraform.tfvars").read_bytes() == before


def test_cli_set_rejects_a_dotted_name(project: Path) -> None:
    assert _run("tfvars", "set", "settings.image", "y", cwd=project) == (
        1,
        "",
        "Error: 'settings.image' is not a variable name; scaler reads and sets whole "
        "top-level variables (letters, digits, _ and -), use --json to set a map or list\n",
    )


def test_cli_help_has_examples(tmp_path: Path) -> None:
    code, out, _ = _run("tfvars", "--help", cwd=tmp_path)
    assert code == 0 and "Read and set variables in terraform.tfvars." in out
    assert "get  Print the value of variable NAME." in out
    assert "set  Set variable NAME to VALUE, adding it if absent." in out
    code, out, _ = _run("tfvars", "set", "--help", cwd=tmp_path)
    assert code == 0
    assert 'scaler tfvars set image_slug sfo2,nyc3:118226535   # image_slug = "118226535"' in out
    assert "--tfvars FILE" in out
    assert "--var-file" not in out  # the old name works, unlisted
    code, out, _ = _run("tfvars", "get", "--help", cwd=tmp_path)
    assert code == 0 and "scaler tfvars get image_slug" in out

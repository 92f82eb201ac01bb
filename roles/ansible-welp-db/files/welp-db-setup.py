"""Create the WordPress database and its user, from JSON on stdin (ansible-welp-db).

The settings, the password among them, come on stdin: never on a command line. The SQL goes to
`mysql` on its stdin, as root over the Unix socket. Prints "created" when the database or the
user was new, else "kept" (the password is set again either way).
"""

import json
import re
import subprocess
import sys


def literal(text: str) -> str:
    """A MariaDB string literal (backslash escapes are on, MariaDB's default)."""
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\0", "\\0")
    return "'" + escaped + "'"


def identifier(text: str) -> str:
    return "`" + text.replace("`", "``") + "`"


def word(text: str, what: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_]+", text):
        sys.exit(f"welp_db_{what} must be letters, digits and _ only, got {text!r}")
    return text


settings = json.load(sys.stdin)
name, user, host = settings["name"], settings["user"], settings["host"]
password = settings["password"]
account = f"{literal(user)}@{literal(host)}"
sql = f"""
SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = {literal(name)};
SELECT COUNT(*) FROM mysql.user WHERE user = {literal(user)} AND host = {literal(host)};
CREATE DATABASE IF NOT EXISTS {identifier(name)}
  CHARACTER SET {word(settings["charset"], "charset")}
  COLLATE {word(settings["collation"], "collation")};
CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {literal(password)};
ALTER USER {account} IDENTIFIED BY {literal(password)};
GRANT ALL PRIVILEGES ON {identifier(name)}.* TO {account};
"""
done = subprocess.run(
    ["mysql", "--batch", "--skip-column-names"], input=sql, text=True, capture_output=True
)
if done.returncode != 0:
    # mysql quotes the SQL near an error: never let the password out that way
    message = done.stderr.replace(password, "***") if password else done.stderr
    sys.exit(f"mysql failed ({done.returncode}): {message.strip()}")
print("kept" if done.stdout.split()[:2] == ["1", "1"] else "created")

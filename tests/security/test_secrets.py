"""No secret in the repository: every tracked (or about to be tracked) text
file is scanned for private keys, cloud and API tokens, and passwords written
into URLs or assignments; settings come from the environment, and
.env.example lists every variable the code reads."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.conftest import ROOT

# Each pattern names what it finds. Placeholders (empty, ${VAR}, <...>,
# "changeme"-like words) are not secrets and are allowed.
SECRET_PATTERNS = {
    "private key": re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"),
    "AWS access key": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b"),
    "API key": re.compile(r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}\b"),
    "password in URL": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:([^@\s/'\"]+)@"),
    "password assignment": re.compile(
        r"(?i)\b(?:password|passwd|secret|api_?key|token)\b[\"']?\s*[:=]\s*[\"']([^\"'\s]{6,})[\"']"
    ),
}
# ${VAR} and ${VAR:-dev-default} read the environment (compose.yaml's local
# defaults); {name} is a format placeholder filled at run time.
PLACEHOLDER = re.compile(
    r"^(\$?\{\w+(:?-[^}]*)?\}|\$\w+|<[^>]*>|\*+|x+|changeme|example|password|secret)$", re.I
)


def candidate_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    return [ROOT / name for name in listed if name and (ROOT / name).is_file()]


def findings(text: str) -> list[str]:
    found = []
    for name, pattern in SECRET_PATTERNS.items():
        for match in pattern.finditer(text):
            value = match.group(1) if pattern.groups else match.group(0)
            if not PLACEHOLDER.match(value):
                found.append(f"{name}: {match.group(0)[:60]}")
    return found


def test_the_scanner_finds_what_it_looks_for() -> None:
    # Assembled at run time, so this file itself holds none of them.
    word = "hunter2" + "secret"
    planted = "\n".join(
        [
            "-----BEGIN RSA " + "PRIVATE KEY-----",
            "AKIA" + "IOSFODNN7EXAMPLE",
            f"postgresql://app:{word}@db:5432/x",
            f'password = "{word}"',
        ]
    )
    assert len(findings(planted)) == 4
    assert findings("postgresql://postgres@127.0.0.1:5432/x  password = ''") == []


def test_no_secret_in_the_repository() -> None:
    leaks = []
    for path in candidate_files():
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue  # binary files (images) hold no configuration
        leaks += [f"{path.relative_to(ROOT)}: {f}" for f in findings(text)]
    assert leaks == []


def variables_read() -> set[str]:
    """Environment variable names the settings, gateway and stack code read."""
    names = set()
    for rel in (
        "services/common/settings.py",
        "gateway/render.py",
        "infra/gateway_and_prometheus.py",
        "infra/stack.py",
    ):
        text = (ROOT / rel).read_text()
        names |= set(re.findall(r'(?:env|environ)\.get\(\s*"([A-Z][A-Z0-9_]+)"', text))
        names |= set(re.findall(r'_(?:int|positive)\(\s*env,\s*"([A-Z][A-Z0-9_]+)"', text))
    return names


def test_env_example_lists_every_setting() -> None:
    example = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example, re.M))
    # HOST and PORT are per process (the stack and images set them), not site settings.
    missing = variables_read() - listed - {"HOST", "PORT"}
    assert missing == set(), f"not in .env.example: {sorted(missing)}"
    assert "password" not in example.lower() or re.search(r"(?i)password=\s*$", example, re.M)

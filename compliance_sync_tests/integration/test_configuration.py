"""The newcomer's contract: every variable the code reads is documented, the README's first code block holds the
two commands, and CI runs the second one verbatim."""

from __future__ import annotations

import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
READS = re.compile(
    r"""(?:environ(?:\.get)?\(\s*|environ\[\s*|getenv\(\s*|alias=|EnvVar\(\s*)["']([A-Z][A-Z0-9_]{2,})["']|env:\s*([A-Z][A-Z0-9_]{2,})"""
)


def variables_read() -> set[str]:
    files = [*ROOT.joinpath("compliance_sync").rglob("*.py"), ROOT / "dagster.yaml", ROOT / "dev.sh"]
    found = set()
    for path in files:
        for match in READS.finditer(path.read_text(encoding="utf-8")):
            found.add(match.group(1) or match.group(2))
    return found


def readme_table_variables() -> set[str]:
    text = ROOT.joinpath("README.md").read_text(encoding="utf-8")
    section = text.split("## Configuration", 1)[1].split("\n### ", 1)[0]
    return {
        m for row in section.splitlines() if row.startswith("| `") for m in re.findall(r"`([A-Z][A-Z0-9_]{2,})`", row)
    }


def test_the_scan_finds_what_the_code_reads():
    found = variables_read()
    assert {
        "SUPABASE_DB_URL",
        "SUPABASE_SERVICE_ROLE_KEY",
        "COMPLIANCE_SYNC_BU_MAP",
        "DAGSTER_PG_URL",
        "DAGSTER_HOME",
    } <= found
    assert len(found) >= 20


def test_every_variable_the_code_reads_is_in_env_example_and_the_readme():
    example = ROOT.joinpath(".env.example").read_text(encoding="utf-8")
    documented = readme_table_variables()
    missing_example = sorted(v for v in variables_read() if not re.search(rf"^#?\s*{v}=|\b{v}\b", example, re.M))
    missing_readme = sorted(variables_read() - documented)
    assert missing_example == [] and missing_readme == []


def test_the_readme_starts_with_the_two_commands():
    text = ROOT.joinpath("README.md").read_text(encoding="utf-8")
    first = text.split("```", 2)[1]
    lines = first.split("\n", 1)[1].strip().splitlines()
    assert lines == ["sh dev.sh demo", "sh dev.sh test"]


def test_ci_runs_the_readmes_second_command_verbatim():
    ci = ROOT.joinpath(".ci", "run").read_text(encoding="utf-8")
    assert "README.md" in ci and 'eval "$test_command"' in ci
    extracted = subprocess.run(
        ["awk", "/^```/{fence++; next} fence==1{n++; if (n==2) {print; exit}}", str(ROOT / "README.md")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert extracted == "sh dev.sh test"
    assert "awk '/^```/{fence++; next} fence==1{n++; if (n==2) {print; exit}}' README.md" in ci


# registry hosts, spelled in pieces so that this file does not hold them either
REGISTRY_HOSTS = ("python" + "hosted", "pypi" + ".org", "npm" + "js", "debian" + ".org", "registry." + "npm")


def test_no_tracked_file_names_a_registry_host():
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    assert len(tracked) > 50
    found = []
    for name in filter(None, tracked):
        path = ROOT / name.decode()
        if not path.is_file():
            continue
        text = path.read_bytes().lower()
        found += [f"{name.decode()}: {host}" for host in REGISTRY_HOSTS if host.encode() in text]
    assert found == []


def test_dev_sh_gives_a_venv_without_pip_a_working_pip_with_tools_on_the_machine(tmp_path):
    """A .venv made without ensurepip (Debian without python3-venv) gets pip from what is already installed,
    and a second run changes nothing (POSIX sh: run by dash)."""
    import shutil
    import sys

    shutil.copy(ROOT / "dev.sh", tmp_path / "dev.sh")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / ".venv")], check=True)
    vpy = tmp_path / ".venv" / "bin" / "python"
    assert subprocess.run([str(vpy), "-m", "pip", "--version"], capture_output=True).returncode != 0
    shell = shutil.which("dash") or "sh"
    first = subprocess.run([shell, "dev.sh", "venv"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert "bootstrapping pip" in first.stderr or "creating .venv again" in first.stderr
    assert subprocess.run([str(vpy), "-m", "pip", "--version"], capture_output=True).returncode == 0
    second = subprocess.run([shell, "dev.sh", "venv"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and "bootstrapping" not in second.stderr and ".venv is ready" in second.stderr


def test_dev_sh_names_the_debian_packages_when_nothing_can_bootstrap_pip():
    text = (ROOT / "dev.sh").read_text(encoding="utf-8")
    assert "apt-get install python3-venv" in text and "apt-get install python3-pip" in text
    assert "PIP_WHEEL" not in text and "urlopen" not in text

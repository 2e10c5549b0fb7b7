"""sftp screened per operation through the real bastion: OpenSSH's sftp client, a real sshd
target, and every outcome checked on the target's filesystem, not only in the client's output."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.demo.sandbox import Sandbox
from recorder.asciicast import load_cast
from tests.support.lab import LOGIN, eventually, need
from tests.support.recordings import recording_for
from tests.support.sessions import bastion_cli as cli
from tests.support.sessions import rules_sandbox

pytestmark = pytest.mark.e2e

# {files} is the folder the tests work in on the target (the same machine).
RULES = """
[defaults]
action = "allow"

[[rule]]
name = "keep-protected"
action = "deny"
sftp = ["remove", "rename", "write", "setstat"]
paths = ["{files}/protected/*"]
message = "protected files stay as they are"

[[rule]]
name = "no-config-uploads"
action = "deny"
sftp = ["write"]
paths = ["{files}/*.conf"]
message = "configuration is deployed, not uploaded"

[[rule]]
name = "no-new-folders"
action = "deny"
sftp = ["mkdir"]
message = "folders are made by the deploy"

[[rule]]
name = "archive-is-final"
action = "deny"
sftp = ["rename"]
paths = ["{files}/archive/*"]
message = "the archive is final"

[[rule]]
name = "deletes-need-a-dba"
action = "approve"
sftp = ["remove"]
paths = ["{files}/approval/*"]
approvers = ["dba"]
timeout = "1m"
"""


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    need("ssh", "sshd", "sftp")
    directory = tmp_path_factory.mktemp("sftpgate")
    files = directory / "files"
    for folder in ("protected", "archive", "approval"):
        (files / folder).mkdir(parents=True)
    sandbox = rules_sandbox(directory, RULES.replace("{files}", str(files)), {"alice": ["ops"], "bob": ["dba"]})
    yield sandbox
    sandbox.stop()


@pytest.fixture
def files(box: Sandbox) -> Path:
    return box.directory / "files"


def unique(folder: Path, name: str, content: str | None = None) -> Path:
    path = folder / f"{uuid.uuid4().hex[:8]}-{name}"
    if content is not None:
        path.write_text(content)
    return path


def sftp_command(box: Sandbox) -> list[str]:
    return ["sftp", "-F", str(box.directory / "ssh_config-alice"), "-J", "bastion", "-b", "-", f"{LOGIN}@db-1"]


def sftp(box: Sandbox, batch: str) -> subprocess.CompletedProcess[str]:
    """Runs `batch` (sftp commands; a leading `-` lets the batch go on after a failure)."""
    return subprocess.run(sftp_command(box), input=batch, capture_output=True, text=True, timeout=60,
                          check=False)


def decisions(box: Sandbox, command: str) -> list[dict[str, object]]:
    return [e for e in box.events() if e["event"] == "command_decision" and e.get("command") == command]


def test_removing_a_protected_file_is_refused_with_the_rules_message(box: Sandbox, files: Path) -> None:
    protected = unique(files / "protected", "keep.txt", "keep me")
    free = unique(files, "free.txt", "delete me")
    result = sftp(box, f"-rm {protected}\nrm {free}\n")
    assert result.returncode == 0, result.stderr  # the session went on after the refusal
    assert "bastion: denied by rule 'keep-protected': protected files stay as they are" in result.stderr
    assert "Permission denied" in result.stderr  # how OpenSSH's sftp reports the status
    assert protected.read_text() == "keep me"
    assert not free.exists()
    [denied] = decisions(box, f"remove {protected}")
    assert (denied["kind"], denied["operation"], denied["action"], denied["rule"]) == (
        "sftp", "remove", "deny", "keep-protected")
    assert decisions(box, f"remove {free}")[0]["action"] == "allow"
    path = recording_for(box, lambda e: e["session"] == denied["session"])
    markers = load_cast(path.read_bytes()).markers()
    assert f"denied: remove {protected} [keep-protected]" in markers
    assert f"remove: {free}" in markers  # the recorder's own transfer marker, for what ran
    assert f"remove: {protected}" not in markers


def test_uploads_to_a_denied_glob_are_refused_and_no_file_appears(box: Sandbox, files: Path,
                                                                  tmp_path: Path) -> None:
    local = tmp_path / "app.conf"
    local.write_text("port = 1\n")
    conf, text = unique(files, "app.conf"), unique(files, "notes.txt")
    protected = unique(files / "protected", "mode.txt", "x")
    protected.chmod(0o640)
    result = sftp(box, f"-put {local} {conf}\nput {local} {text}\n-chmod 777 {protected}\n")
    assert result.returncode == 0, result.stderr
    assert "denied by rule 'no-config-uploads': configuration is deployed, not uploaded" in result.stderr
    assert "denied by rule 'keep-protected'" in result.stderr
    assert not conf.exists()
    assert text.read_text() == "port = 1\n"  # allowed uploads are whole
    assert protected.stat().st_mode & 0o777 == 0o640


def test_downloads_are_allowed(box: Sandbox, files: Path, tmp_path: Path) -> None:
    protected = unique(files / "protected", "report.bin")
    protected.write_bytes(bytes(range(256)) * 1000)
    before = protected.stat()
    result = sftp(box, f"get {protected} {tmp_path / 'copy.bin'}\n")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "copy.bin").read_bytes() == protected.read_bytes()
    after = protected.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert decisions(box, f"read {protected}")[0]["action"] == "allow"


def test_mkdir_and_rename_are_decided_per_rule(box: Sandbox, files: Path) -> None:
    folder = unique(files, "new-folder")
    protected = unique(files / "protected", "stay.txt", "stay")
    moved = unique(files, "moved.txt")
    free = unique(files, "free.txt", "free")
    archived = files / "archive" / free.name
    renamed = unique(files, "renamed.txt")
    result = sftp(box, f"-mkdir {folder}\n-rename {protected} {moved}\n-rename {free} {archived}\n"
                       f"rename {free} {renamed}\n")
    assert result.returncode == 0, result.stderr
    for message in ("denied by rule 'no-new-folders': folders are made by the deploy",
                    "denied by rule 'keep-protected'", "denied by rule 'archive-is-final'"):
        assert message in result.stderr
    assert not folder.exists()
    assert protected.read_text() == "stay" and not moved.exists()
    assert not archived.exists()
    assert renamed.read_text() == "free" and not free.exists()


def start_sftp(box: Sandbox, batch: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(sftp_command(box), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None
    proc.stdin.write(batch)
    proc.stdin.flush()  # communicate() closes it: the batch ends there
    return proc


def test_relative_paths_are_decided_where_the_target_resolves_them(box: Sandbox, files: Path,
                                                                   tmp_path: Path) -> None:
    # scp (SFTP mode) sends paths relative to the login's home directory as they are.
    local = tmp_path / f"{uuid.uuid4().hex[:8]}-scp.txt"
    local.write_text("copied")
    home = pwd.getpwnam(LOGIN).pw_dir
    relative = os.path.relpath(files, home)

    def scp(destination: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["scp", "-F", str(box.directory / "ssh_config-alice"), "-J", "bastion", str(local),
                               f"{LOGIN}@db-1:{destination}"], capture_output=True, text=True, timeout=60,
                              check=False, stdin=subprocess.DEVNULL)

    refused = scp(f"{relative}/protected/")
    assert refused.returncode != 0
    assert "bastion: denied by rule 'keep-protected'" in refused.stderr
    assert not (files / "protected" / local.name).exists()
    assert decisions(box, f"write {files}/protected/{local.name}")[0]["action"] == "deny"
    allowed = scp(f"{relative}/")
    assert allowed.returncode == 0, allowed.stderr
    assert (files / local.name).read_text() == "copied"


def pending_request(box: Sandbox, path: Path) -> str | None:
    listing = cli(box, "approvals", "list").stdout
    return next((line.split()[0] for line in listing.splitlines() if str(path) in line), None)


def test_a_held_remove_runs_after_approval_and_not_after_a_denial(box: Sandbox, files: Path) -> None:
    approved = unique(files / "approval", "old.log", "old")
    proc = start_sftp(box, f"rm {approved}\n")
    request = eventually(lambda: pending_request(box, approved), "the approval request listed")
    assert approved.exists()  # held: the target has not seen the request
    assert cli(box, "approvals", "approve", request, "--as", "alice").returncode == 1  # not one's own
    assert cli(box, "approvals", "approve", request, "--as", "bob").returncode == 0
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"waiting for approval (request {request}" in err
    assert not approved.exists()

    denied = unique(files / "approval", "keep.log", "keep")
    proc = start_sftp(box, f"rm {denied}\n")
    request = eventually(lambda: pending_request(box, denied), "the second approval request listed")
    assert cli(box, "approvals", "deny", request, "--as", "bob").returncode == 0
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert f"bastion: 'remove {denied}' was not approved (denied by bob)" in err
    assert denied.read_text() == "keep"


def test_rules_check_cli_decides_sftp_operations(box: Sandbox, files: Path) -> None:
    def check(*command: str) -> str:
        result = subprocess.run([sys.executable, "-m", "bastion", "rules", "check", "-c", str(box.config_path),
                                 "--user", "alice", "--target", "db-1", "--login", LOGIN, "--kind", "sftp",
                                 "--", *command], capture_output=True, text=True, timeout=60, check=False)
        verdict = result.stdout.splitlines()[0]
        assert result.returncode == (1 if verdict.startswith("DENY") else 0), result.stderr  # the exit codes
        return verdict

    assert check("rename", f"{files}/a", f"{files}//protected/./b") == (
        f"DENY: deny by rule 'keep-protected' (on: rename {files}/protected/b)")
    assert check("read", f"{files}/protected/b") == f"ALLOW: allow by the target's default (on: read {files}/protected/b)"
    assert check("sftp") == "ALLOW: allow by the target's default (on: sftp)"

"""Recordings of real sessions, read back by the real asciinema and by a terminal emulator; the
recorder's worker process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pyte
import pytest

from bastion.demo.sandbox import Sandbox
from player.app import Recording
from player.keyframes import cache_for
from player.replay import plain_lines
from recorder.asciicast import Cast, load_cast
from recorder.chain import verify
from recorder.index import RecordingIndex, SessionRow
from recorder.storage import LocalDirectoryStore
from recorder.writer import Recorder, RecordingFailed
from tests.support.lab import LOGIN, Lab, eventually, need
from tests.support.recordings import KEY, asciinema_cat, open_recording, recording_for
from tests.support.sessions import bastion_cli
from tests.support.tmux import TmuxPane

pytestmark = pytest.mark.e2e


def test_exec_recording_has_metadata_streams_and_exit(lab: Lab) -> None:
    command = "echo to-stdout; echo to-stderr >&2; echo again; exit 3"
    result = lab.ssh(f"{LOGIN}@db-1", command)
    assert result.returncode == 3
    path = recording_for(lab.sandbox, lambda e: e.get("command") == command)
    data = path.read_bytes()
    cast = load_cast(data)
    meta = cast.header["bastion"]
    assert cast.header["command"] == command
    assert (meta["user"], meta["login"], meta["target"], meta["kind"]) == ("alice", LOGIN, "db-1", "exec")
    assert meta["key_id"].startswith("bastion user=alice target=db-1") and meta["serial"] > 0
    assert meta["client_version"].startswith("SSH-2.0-OpenSSH")
    # Which pipe wrote first is up to the target; the markers say which stream is which.
    streams, current = {"stdout": "", "stderr": ""}, "stdout"
    for event in cast.events[:-1]:
        if event.code == "m":
            current = event.data
        else:
            streams[current] += event.data
    assert streams == {"stdout": "to-stdout\nagain\n", "stderr": "to-stderr\n"}
    assert (cast.events[-1].code, cast.events[-1].data) == ("m", "exit: 3")
    played = asciinema_cat(path)
    assert b"to-stdout" in played and b"to-stderr" in played
    # No key material in a recording.
    assert b"PRIVATE KEY" not in data and b"ssh-ed25519 AAAA" not in data
    verify = bastion_cli(lab.sandbox, "recordings", "verify", path.stem)
    assert verify.returncode == 0 and "verified" in verify.stdout


def replay(cast: Cast) -> list[str]:
    """The final screen of a recording, as a terminal emulator shows it."""
    screen = pyte.Screen(*cast.size)
    stream = pyte.ByteStream(screen)
    for event in cast.events:
        if event.code == "o":
            stream.feed(event.data.encode("utf-8", "surrogateescape"))
        elif event.code == "r":
            cols, rows = map(int, event.data.split("x"))
            screen.resize(rows, cols)
    return [line.rstrip() for line in screen.display]


def test_pty_recording_replays_to_the_same_screen(lab: Lab) -> None:
    need("tmux")
    pane = TmuxPane(["ssh", "-F", str(lab.ssh_config), "-J", "bastion", f"{LOGIN}@db-1"],
                    width=90, height=20)
    try:
        pane.type("PS1='r''ec> '; clear")
        pane.send("Enter")
        pane.wait_for("rec>")
        pane.type("printf '\\033[1;31mred\\033[0m plain\\n'; seq 1 30 | tail -n 4; echo done-$((2+3))")
        pane.send("Enter")
        pane.wait_for("done-5\nrec>")
        pane.resize(100, 25)
        pane.type("tput cols; echo done-2")
        pane.send("Enter")
        expected = pane.wait_for("done-2\nrec>")
        shown = [line.rstrip() for line in expected.splitlines()]

        def replayed_live() -> tuple[Path, Cast] | None:
            """The session's live file (the newest) once the recorder has flushed the screen."""
            live = list((lab.sandbox.directory / "recordings").rglob("*.cast"))
            newest = max(live, key=lambda p: p.stat().st_mtime)
            cast = load_cast(newest.read_bytes())
            if replay(cast)[: len(shown)] != shown or b"echo done-2" not in cast.input_bytes():
                return None  # typed keys are written once their echo has been read
            return newest, cast

        newest, cast = eventually(replayed_live, "the live recording replays to the pane's screen")
        assert cast.header["bastion"]["kind"] == "shell"
        assert "100" in shown
        assert any(e.code == "r" and e.data == "100x25" for e in cast.events)
        assert b"echo done-2" in cast.input_bytes()
        pane.exit_shell()
    finally:
        pane.close()
    assert b"done-5" in asciinema_cat(newest)


def test_a_recording_without_a_pty_replays_as_the_users_terminal_drew_it(lab: Lab) -> None:
    """`ssh db-1 'cmd'` has no pty: its line feeds reach the user's terminal through their own
    tty as CR LF. The player's replay of its recording shows the screen the real ssh client
    drew in tmux, lines from the left edge, not a staircase."""
    need("tmux")
    command = "printf 'one\\ntwo three\\n'; seq 1 4; echo done-$((2+3))"
    pane = TmuxPane(["ssh", "-F", str(lab.ssh_config), "-J", "bastion", f"{LOGIN}@db-1", command],
                    width=60, height=12)
    try:
        pane.wait_for("done-5")
        shown = [line.rstrip() for line in pane.drawn().splitlines()]
    finally:
        pane.close()
    assert shown[:7] == ["one", "two three", "1", "2", "3", "4", "done-5"], shown
    path = recording_for(lab.sandbox, lambda e: e.get("command") == command)
    recording = Recording.open(path, None)
    timeline = recording.timeline
    assert timeline.cast.header["bastion"]["pty"] is False
    assert plain_lines(timeline.screen_at(timeline.duration))[:7] == shown[:7]


def test_sftp_transfers_become_markers(lab: Lab, tmp_path: Path) -> None:
    (tmp_path / "report.bin").write_bytes(os.urandom(70_000))
    remote = f"/tmp/rec-sftp-{os.getpid()}"
    batch = tmp_path / "batch"
    batch.write_text(f"-mkdir {remote}\nput {tmp_path / 'report.bin'} {remote}/report.bin\n"
                     f"rename {remote}/report.bin {remote}/final.bin\n"
                     f"get {remote}/final.bin {tmp_path / 'back.bin'}\nrm {remote}/final.bin\nrmdir {remote}\n")
    result = lab.tool("sftp", "-b", str(batch), f"{LOGIN}@db-1")
    assert result.returncode == 0, result.stderr
    path = recording_for(lab.sandbox, lambda e: e.get("subsystem") == "sftp" and e["bytes_in"] > 70_000)
    cast = load_cast(path.read_bytes())
    assert cast.markers() == [
        f"mkdir: {remote}", f"upload: {remote}/report.bin 70000 bytes",
        f"rename: {remote}/report.bin -> {remote}/final.bin", f"download: {remote}/final.bin 70000 bytes",
        f"remove: {remote}/final.bin", f"rmdir: {remote}", "exit: 0"]
    assert not [e for e in cast.events if e.code in "oi"]  # contents are never recorded
    listing = bastion_cli(lab.sandbox, "recordings", "list", "--marker", "rename", "--json")
    assert path.stem in [json.loads(line)["id"] for line in listing.stdout.splitlines()]


def test_legacy_scp_upload_becomes_a_marker(lab: Lab, tmp_path: Path) -> None:
    (tmp_path / "legacy.txt").write_bytes(b"x" * 1234)
    remote = f"/tmp/legacy-{tmp_path.name}-{os.getpid()}.txt"  # this test's scp, not another's
    result = lab.tool("scp", "-O", str(tmp_path / "legacy.txt"), f"{LOGIN}@db-1:{remote}")
    assert result.returncode == 0, result.stderr
    path = recording_for(lab.sandbox, lambda e: str(e.get("command", "")) == f"scp -t {remote}")
    # a single file's target may be its new name or a folder it goes into: the marker says both
    assert load_cast(path.read_bytes()).markers() == [f"upload: {remote} (legacy.txt) 1234 bytes", "exit: 0"]


@pytest.fixture
def own_box(tmp_path: Path) -> Iterator[Sandbox]:
    need("ssh", "sshd")
    box = Sandbox(tmp_path / "box")
    box.add_user("alice", ["ops"])
    box.add_target("db-1", logins=[LOGIN], groups=["ops"])
    box.write_ssh_config("alice")
    yield box
    box.stop()


def _ssh(box: Sandbox, command: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["ssh", "-F", str(box.directory / "ssh_config-alice"), "-J", "bastion",
                             f"{LOGIN}@db-1", command], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_sigkill_mid_session_leaves_a_readable_incomplete_recording(own_box: Sandbox) -> None:
    own_box.extra["recording"] = {"checkpoint_interval": 1}
    own_box.start_bastion()
    proc = _ssh(own_box, "for i in $(seq 1 400); do echo line-$i; sleep 0.05; done")
    assert proc.stdout is not None
    while b"line-30" not in proc.stdout.readline():
        pass

    def flushed_and_checkpointed() -> bool:
        found = list((own_box.directory / "recordings").rglob("*.cast"))
        signatures = found[0].with_name(found[0].name + ".sig") if found else None
        return bool(found) and b"line-30" in found[0].read_bytes() and signatures is not None \
            and signatures.exists() and signatures.stat().st_size > 0

    eventually(flushed_and_checkpointed, "line-30 on disk under a signed checkpoint")
    assert own_box.process is not None
    own_box.process.send_signal(signal.SIGKILL)
    own_box.process.wait()
    proc.wait(30)
    [path] = list((own_box.directory / "recordings").rglob("*.cast"))
    # The worker outlives the bastion long enough to end the session in the index.
    eventually(lambda: _row(own_box, path.stem).state == "incomplete", "the index says incomplete")
    cast = load_cast(path.read_bytes())
    assert b"line-30" in cast.output_bytes()
    verify = bastion_cli(own_box, "recordings", "verify", str(path))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"incomplete: session {path.stem}, intact up to event" in verify.stdout
    intact = int(verify.stdout.split("intact up to event ")[1].split()[0])
    assert 1 <= intact <= len(cast.events)
    # ... and by session id, where the index also says it never closed.
    by_id = bastion_cli(own_box, "recordings", "verify", path.stem)
    assert by_id.returncode == 0 and "incomplete" in by_id.stdout
    assert "the bastion stopped before the session ended" in by_id.stdout
    # ... ended at the last event.
    row = _row(own_box, path.stem)
    assert row.state == "incomplete" and row.duration is not None and row.ended is not None
    assert row.duration == pytest.approx(cast.events[-1].time, abs=0.01)
    asciinema_cat(path)


def _row(box: Sandbox, session: str) -> SessionRow:
    index = RecordingIndex(box.directory / "recordings" / "index.db")
    try:
        row = index.get(session)
    finally:
        index.close()
    assert row is not None
    return row


def _worker_pid(box: Sandbox) -> int:
    """The bastion's recorder worker (its one child process running recorder.worker)."""
    assert box.process is not None
    pid = box.process.pid

    def found() -> int | None:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        for child in children:
            with contextlib.suppress(OSError):
                if b"recorder.worker" in Path(f"/proc/{child}/cmdline").read_bytes():
                    return int(child)
        return None

    return eventually(found, "the recorder worker process")


def _live_session(box: Sandbox) -> tuple[subprocess.Popen[bytes], str]:
    """A session printing a line every 50 ms, once its recording is on disk; and its id."""
    proc = _ssh(box, "for i in $(seq 1 600); do echo line-$i; sleep 0.05; done")
    assert proc.stdout is not None
    while b"line-20" not in proc.stdout.readline():
        pass

    def on_disk() -> str | None:
        found = [p for p in (box.directory / "recordings").rglob("*.cast") if b"line-20" in p.read_bytes()]
        return found[0].stem if found else None

    return proc, eventually(on_disk, "line-20 in a recording on disk")


def test_a_bastion_killed_with_its_worker_is_set_right_at_the_next_start(own_box: Sandbox) -> None:
    """A machine that went down: nobody closed the recording; the next start ends it."""
    own_box.start_bastion()
    proc, session = _live_session(own_box)
    worker = _worker_pid(own_box)
    os.kill(worker, signal.SIGSTOP)  # so that it cannot end the recording in the index either
    assert own_box.process is not None
    own_box.process.send_signal(signal.SIGKILL)
    own_box.process.wait()
    os.kill(worker, signal.SIGKILL)
    proc.wait(30)
    assert _row(own_box, session).state == "live"
    own_box.start_bastion()
    # Once it listens, the new instance finds the old one's process gone on this host: its lease
    # ends at once and what it left live is ended.
    row = eventually(lambda: (found := _row(own_box, session)).state != "live" and found, "the row ended")
    assert row.state == "incomplete" and row.error == "the bastion stopped before the session ended"
    path = Path(row.location or "")
    cast = load_cast(path.read_bytes())
    assert row.duration == pytest.approx(cast.events[-1].time, abs=0.01)
    assert row.ended == pytest.approx(row.started + cast.events[-1].time, abs=0.01)
    assert any(e["event"] == "recording_incomplete" and e["session"] == session for e in own_box.events())
    listed = bastion_cli(own_box, "recordings", "list")
    [line] = [line for line in listed.stdout.splitlines() if line.startswith(session)]
    assert " live " not in line and "incomplete" in line
    assert b"line-20" in asciinema_cat(path)


def test_a_dead_worker_fails_its_sessions_in_the_index_and_the_audit_log(own_box: Sandbox) -> None:
    own_box.start_bastion()
    proc, session = _live_session(own_box)
    os.kill(_worker_pid(own_box), signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert b"bastion: session ended: recorder failed: recording stopped: the recorder process exited" in err
    failed = eventually(lambda: [e for e in own_box.events() if e["event"] == "recording_failed"],
                        "a recording_failed event")
    assert failed[0]["session"] == session and "the recorder process exited" in failed[0]["reason"]
    row = eventually(lambda: (r := _row(own_box, session)).ended is not None and r, "the session's end indexed")
    assert row.state == "failed" and row.duration is not None and row.duration > 0
    listed = bastion_cli(own_box, "recordings", "list")
    [line] = [line for line in listed.stdout.splitlines() if line.startswith(session)]
    assert " live " not in line and "failed" in line
    verify = bastion_cli(own_box, "recordings", "verify", session)
    assert verify.returncode == 0 and "incomplete" in verify.stdout and "the recorder process exited" in verify.stdout
    asciinema_cat(Path(row.location or ""))
    # The next session gets a new worker.
    after = _ssh(own_box, "echo after-the-worker")
    assert after.communicate(timeout=60)[0] == b"after-the-worker\n"


def test_a_hangup_to_the_process_group_leaves_recordings_alone(own_box: Sandbox) -> None:
    """`kill -HUP -PGID` reaches the bastion (which reloads) and its worker (which ignores it)."""
    own_box.start_bastion()
    proc, session = _live_session(own_box)
    assert own_box.process is not None
    for pid in (own_box.process.pid, _worker_pid(own_box)):
        os.kill(pid, signal.SIGHUP)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.endswith(b"line-600\n")
    path = recording_for(own_box, lambda e: e.get("session") == session)
    verify = bastion_cli(own_box, "recordings", "verify", str(path))
    assert verify.returncode == 0 and "verified" in verify.stdout, verify.stdout
    assert not any(e["event"] == "recording_failed" for e in own_box.events())


def test_a_live_session_verifies_and_plays_as_live(own_box: Sandbox) -> None:
    own_box.extra["recording"] = {"checkpoint_interval": 1}
    own_box.start_bastion()
    proc, session = _live_session(own_box)
    path = Path(_row(own_box, session).location or "")
    for ref in (session, str(path)):
        verify = bastion_cli(own_box, "recordings", "verify", ref)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert f"live: session {session}, still being recorded" in verify.stdout
    proc.kill()
    proc.wait()


def test_another_sessions_files_under_this_name_do_not_verify(own_box: Sandbox) -> None:
    own_box.start_bastion()
    for word in ("first", "second"):
        _ssh(own_box, f"echo {word}").communicate(timeout=60)
    first = recording_for(own_box, lambda e: e.get("command") == "echo first")
    second = recording_for(own_box, lambda e: e.get("command") == "echo second")
    for suffix in ("", ".sig"):
        shutil.copyfile(f"{second}{suffix}", f"{first}{suffix}")
    for ref in (str(first), first.stem):
        verify = bastion_cli(own_box, "recordings", "verify", ref)
        assert verify.returncode == 1, verify.stdout
        assert (f"TAMPERED at event 0: the header names session {second.stem}, the file is {first.stem}"
                in verify.stdout)


def test_tampered_recording_is_reported(own_box: Sandbox) -> None:
    own_box.start_bastion()
    _ssh(own_box, "echo one; echo two; echo three").communicate(timeout=60)
    own_box.stop()
    [path] = list((own_box.directory / "recordings").rglob("*.cast"))
    path.write_bytes(path.read_bytes().replace(b"two", b"owt"))
    verify = bastion_cli(own_box, "recordings", "verify", path.stem)
    assert verify.returncode == 1
    assert "TAMPERED at event" in verify.stdout


@pytest.fixture
def small_disk(own_box: Sandbox) -> Iterator[Path]:
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a small tmpfs")
    mountpoint = own_box.directory / "recordings"
    mountpoint.mkdir(mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        own_box.stop()
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def _fill(folder: Path) -> None:
    """Take every byte left on the file system of `folder`."""
    with (folder / "filler").open("ab", buffering=0) as filler:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    filler.write(b"\0" * size)


def test_disk_full_ends_the_session_then_refuses_new_ones(own_box: Sandbox, small_disk: Path) -> None:
    """A real full file system (a 256 KB tmpfs)."""
    own_box.start_bastion()
    before = _ssh(own_box, "echo before-the-flood")
    assert before.communicate(timeout=60)[0] == b"before-the-flood\n"
    reserve = small_disk / "reserve"  # freed once the disk is full: the index heals then
    reserve.write_bytes(b"\0" * 65536)
    flood = _ssh(own_box, "yes 'a line of output that fills the disk' | head -c 5000000; echo unreachable-end")
    out, err = flood.communicate(timeout=60)
    assert flood.returncode == 255
    assert b"bastion: session ended: recorder failed: cannot write recording: No space left on device" in err
    assert b"unreachable-end" not in out
    # The flood's recording ends with a whole line (the one cut short was taken back): the real
    # asciinema reads it, it is intact up to its last checkpoint, the index says failed.
    [ended] = [e for e in own_box.events() if e["event"] == "session_ended" and "yes" in e.get("command", "")]
    # The index lives on the full disk too: its update may fail now, and is tried again.
    reserve.unlink()
    row = eventually(lambda: (r := _row(own_box, ended["session"])).ended is not None and r, "the flood indexed")
    assert row.state == "failed" and "No space left on device" in (row.error or "")
    flooded = Path(row.location or "")
    assert flooded.read_bytes().endswith(b"\n")
    assert b"a line of output that fills the disk" in asciinema_cat(flooded)
    verify = bastion_cli(own_box, "recordings", "verify", str(flooded))
    assert verify.returncode == 0 and "incomplete: session" in verify.stdout, verify.stdout
    assert "No space left on device" in verify.stdout
    # Less than a line may be left; once nothing is, sessions are refused at the start.
    _fill(small_disk)
    refused = _ssh(own_box, "echo should-not-run")
    out, err = refused.communicate(timeout=60)
    assert refused.returncode == 255 and out == b""
    assert b"bastion: cannot start session: recorder: cannot write recording: No space left on device" in err
    # What was recorded before the disk filled is still there and intact.
    first = recording_for(own_box, lambda e: e.get("command") == "echo before-the-flood")
    assert load_cast(first.read_bytes()).output_bytes() == b"before-the-flood\n"
    assert bastion_cli(own_box, "recordings", "verify", str(first)).returncode == 0


@pytest.fixture
def read_only_today(own_box: Sandbox, small_disk: Path) -> Iterator[Path]:
    """Today's recordings folder on a read-only file system (the index stays writable)."""
    today = small_disk / time.strftime("%Y/%m/%d", time.gmtime())
    today.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k,mode=0700", "tmpfs", str(today)], check=True)
    try:
        yield today
    finally:
        own_box.stop()
        subprocess.run(["umount", "-l", str(today)], check=False)


def test_read_only_recordings_refuse_sessions(own_box: Sandbox, read_only_today: Path) -> None:
    own_box.start_bastion()
    proc = _ssh(own_box, "echo should-not-run")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 255 and out == b""
    assert b"bastion: cannot start session: recorder: cannot write recording: Read-only file system" in err
    # A bastion that cannot set up its recordings does not start at all.
    own_box.stop()
    own_box.extra["recordings_dir"] = str(read_only_today)
    with pytest.raises(RuntimeError, match=r"cannot set up recordings: .*Read-only file system"):
        own_box.start_bastion()


def test_continue_policy_is_an_explicit_opt_out(own_box: Sandbox, read_only_today: Path) -> None:
    own_box.extra["recording"] = {"on_failure": "continue"}
    own_box.start_bastion()
    proc = _ssh(own_box, "echo ran-unrecorded")
    assert proc.communicate(timeout=60)[0] == b"ran-unrecorded\n"
    assert any(e["event"] == "recording_failed" for e in own_box.events())


# -- the recorder's worker process -----------------------------------------------------------------


async def process_recorder(tmp_path: Path) -> tuple[Recorder, RecordingIndex]:
    index = RecordingIndex(tmp_path / "index.db")
    recorder = Recorder(LocalDirectoryStore(tmp_path / "rec"), index, KEY, flush_interval=0.05,
                        loop=asyncio.get_running_loop(), process=True)
    return recorder, index


async def test_worker_process_writes_signs_and_indexes(tmp_path: Path) -> None:
    recorder, index = await process_recorder(tmp_path)
    rec = open_recording(recorder)
    worker = recorder._worker
    assert worker is not None and worker.process.poll() is None
    for n in range(2000):  # more than the socket takes at once: the rest waits for writability
        rec.output(b"%06d " % n + b"\x1b[32mok\x1b[0m" * 300 + b"\r\n")
    rec.input(b"exit\r")
    rec.close(exit_status=0, bytes_in=5, bytes_out=1)
    await asyncio.sleep(0.2)
    recorder.stop()
    assert worker.process.returncode == 0
    row = index.get("s1")
    assert row is not None and row.state == "closed" and row.exit_status == 0
    path = Path(row.location or "")
    cast = load_cast(path.read_bytes())
    assert cast.output_bytes().count(b"\r\n") == 2000 and cast.input_bytes() == b"exit\r"
    result = verify(path.read_bytes(), Path(f"{path}.sig").read_bytes(), KEY,
                    expected_lines=row.lines, expected_head=row.chain)
    assert result.state == "verified", result


async def test_a_dead_worker_fails_live_recordings_and_the_next_session_gets_a_new_one(
    tmp_path: Path,
) -> None:
    recorder, index = await process_recorder(tmp_path)
    errors: list[str] = []
    rec = open_recording(recorder)
    rec.on_error = errors.append
    rec.output(b"before\r\n")
    first = recorder._worker
    assert first is not None
    os.kill(first.process.pid, signal.SIGKILL)
    for _ in range(100):
        if errors:
            break
        await asyncio.sleep(0.05)
    assert errors and errors[0].startswith("recording stopped: the recorder process exited")
    row = index.get("s1")
    assert row is not None and row.state == "failed" and (row.error or "").startswith("recording stopped")
    with pytest.raises(RecordingFailed):
        rec.output(b"after\r\n")
    rec.close(exit_signal="HUP", bytes_out=8)
    row = index.get("s1")
    assert row is not None and row.state == "failed" and row.exit_signal == "HUP" and row.ended is not None
    second = open_recording(recorder, "s2")
    assert recorder._worker is not first and second.error is None
    second.output(b"fine\r\n")
    second.close(exit_status=0)
    await asyncio.sleep(0.1)
    recorder.stop()
    cast = load_cast(Path(tmp_path / "rec" / f"{second.name}.cast").read_bytes())
    assert cast.output_bytes() == b"fine\r\n"


def test_a_recordings_folder_others_can_write_is_refused_at_start(own_box: Sandbox) -> None:
    folder = own_box.directory / "recordings"
    folder.mkdir()
    folder.chmod(0o777)
    with pytest.raises(RuntimeError, match=r"cannot set up recordings: .*recordings is writable by other "
                                           r"users \(mode 0777\); run: chmod 700"):
        own_box.start_bastion()
    folder.chmod(0o700)
    own_box.start_bastion()
    _ssh(own_box, "echo private").communicate(timeout=60)
    path = recording_for(own_box, lambda e: e.get("command") == "echo private")
    for level in (path.parent, path.parent.parent, path.parent.parent.parent):
        assert level.stat().st_mode & 0o777 == 0o700, level


def test_a_long_sessions_keyframes_are_built_as_it_ends(own_box: Sandbox) -> None:
    """The bastion builds the player's keyframes of a session past 256 KB of output that drew
    on the screen (in a niced process of its own) once the recorder closed it: a reviewer's
    first open seeks at once. As long a session of plain lines, which the player skips through
    anyway, gets none (builds run one at a time, in the order the sessions ended)."""
    own_box.start_bastion()
    plain = _ssh(own_box, "seq 1 100000")
    assert plain.communicate(timeout=60)[0].endswith(b"\n100000\n")
    # Each line ends deleting a character (DCH): output a replay cannot skip.
    command = r"seq 1 40000 | sed 's/$/\x1b[P/'"
    long = _ssh(own_box, command)
    assert long.communicate(timeout=60)[0].endswith(b"40000\x1b[P\n")
    short = _ssh(own_box, "echo short")
    short.communicate(timeout=60)
    path = recording_for(own_box, lambda e: e.get("command") == command)
    cache = cache_for(path, own_box.directory / "recordings")
    events = len(load_cast(path.read_bytes()).events)
    keyframes = eventually(lambda: cache.load(path, events), "the long session's keyframes cached", timeout=300)
    assert keyframes[0].index == 0 and len(keyframes) > 1
    recording = Recording.open(path, None, cache=cache)
    assert recording.timeline.complete
    assert "40000" in "\n".join(plain_lines(recording.timeline.screen_after(events)))
    lines = recording_for(own_box, lambda e: e.get("command") == "seq 1 100000")
    assert lines.stat().st_size > 256 * 1024
    assert cache.load(lines, len(load_cast(lines.read_bytes()).events)) is None
    small = recording_for(own_box, lambda e: e.get("command") == "echo short")
    assert cache.load(small, len(load_cast(small.read_bytes()).events)) is None  # replays at once anyway

"""Build a running bastion's shared state from its config: the one place stages are wired."""

from __future__ import annotations

from bastion.audit import AuditLog
from bastion.config import BastionConfig
from bastion.keys import KeyStore
from bastion.recording import RecordingPolicy, RecordingStage
from bastion.server import BastionState
from recorder.index import RecordingIndex
from recorder.signing import RecordingKey
from recorder.storage import LocalDirectoryStore
from recorder.writer import Recorder

RECORDING_KEY = "recording_key"


def build_state(config: BastionConfig, keys: KeyStore) -> BastionState:
    audit = AuditLog(path=config.log_file)
    state = BastionState(config=config, keys=keys, audit=audit)
    settings = config.recording
    if settings.enabled:
        root = config.recordings_dir
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        recorder = Recorder(
            LocalDirectoryStore(root),
            RecordingIndex(root / "index.db"),
            RecordingKey.load_or_create(config.keys_dir / RECORDING_KEY),
            version=settings.version,
            flush_interval=settings.flush_interval,
            checkpoint_interval=settings.checkpoint_interval,
            log=audit.event,
        )
        policy = RecordingPolicy(on_failure=settings.on_failure)
        # Output order matters once the masker exists: it runs before the recorder.
        state.stages = lambda: [RecordingStage(recorder, policy, audit)]
        state.on_start.append(lambda loop: setattr(recorder, "loop", loop))
        state.on_stop.append(recorder.stop)
    return state

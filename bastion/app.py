"""Build a running bastion's shared state from its config: the one place stages are wired."""

from __future__ import annotations

from collections.abc import Callable

from bastion.audit import AuditLog
from bastion.config import BastionConfig
from bastion.keys import KeyStore
from bastion.masking import MaskingSettings, MaskingStage
from bastion.pipeline import SessionStage
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
    masking = MaskingSettings(
        enabled=config.masking.enabled, sinks=config.masking.sinks, disable=config.masking.disable,
        hold_seconds=config.masking.hold_ms / 1000, custom=config.masking.custom,
    )
    recording_stage: Callable[[], list[SessionStage]]
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
        record_only = masking if masking.enabled and config.masking.sinks == "recording" else None
        recording_stage = lambda: [  # noqa: E731
            RecordingStage(recorder, policy, audit, masker=record_only.make_masker() if record_only else None)
        ]
        state.on_start.append(lambda loop: setattr(recorder, "loop", loop))
        state.on_stop.append(recorder.stop)
    else:
        recording_stage = list
    # Order matters: the masker runs first, so the recorder only ever sees masked output.
    if masking.enabled and config.masking.sinks == "both":
        state.stages = lambda: [MaskingStage(masking), *recording_stage()]
    else:
        state.stages = recording_stage
    return state

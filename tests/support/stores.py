"""State stores as a running bastion instance opens them."""

from __future__ import annotations

from pathlib import Path

from bastion.core.masker import TextMasker
from bastion.state.approvals import ApprovalStore
from bastion.state.instances import Instances

INSTANCE = "test-instance"


def live_store(location: Path | str, *, masker: TextMasker, instance: str = INSTANCE,
               lease: float = 3600) -> ApprovalStore:
    """An approval store whose requests are held by an instance with a live lease, as a running
    bastion's are (a request whose instance's lease ran out cannot be approved)."""
    Instances(location, instance, lease=lease).register()
    return ApprovalStore(location, masker=masker, instance=instance)

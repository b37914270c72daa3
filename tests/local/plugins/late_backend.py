"""The local backend, late to say that a dashboard has started: its ``launch`` returns only
once the file ``launch-returns`` is in the project folder.

Installed by the tests as a third-party backend (entry point ``late`` of
``sense.backends``), it holds ``sense run`` between starting its master
script and waiting for it: a Ctrl-C can be sent there, as on a busy machine.
"""

from __future__ import annotations

import os
import time

from sense.local.backends import LaunchSpec, Placement
from sense.local.backends.local import LocalBackend

#: The file whose making lets ``launch`` return.
GO = "launch-returns"
#: Seconds ``launch`` waits for it at most.
PATIENCE = 60


class LateBackend(LocalBackend):
    name = "late"

    def launch(self, spec: LaunchSpec) -> Placement:
        placement = super().launch(spec)
        deadline = time.monotonic() + PATIENCE
        while not os.path.exists(os.path.join(self.project_dir, GO)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{GO} was not made within {PATIENCE} s")
            time.sleep(0.01)
        return placement

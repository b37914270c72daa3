"""A real IPython kernel, in a throwaway environment, driven through jupyter_client."""

from __future__ import annotations

import json
import os
import sysconfig
import time
import venv
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def throwaway_environment(directory: Path) -> Path:
    """A new virtual environment that sees this one's packages but installs into its own.

    Returns its Python. What pip installs there goes into ``directory``, so a
    test may install packages without leaving them in the environment that
    runs the tests.
    """
    venv.EnvBuilder(with_pip=False).create(directory)
    python = directory / "bin" / "python"
    purelib = Path(
        sysconfig.get_path("purelib", vars={"base": str(directory), "platbase": str(directory)})
    )
    # addsitedir, not a plain path line: it also runs the .pth files there (editable installs).
    outer = sysconfig.get_path("purelib")
    (purelib / "_outer_environment.pth").write_text(f"import site; site.addsitedir({outer!r})\n")
    return python


@dataclass
class Cell:
    """What one executed cell produced, each output with the time it arrived."""

    reply: dict
    outputs: list[tuple[float, dict]] = field(default_factory=list)

    def stream(self, name: str) -> str:
        return "".join(
            m["content"]["text"]
            for _, m in self.outputs
            if m["msg_type"] == "stream" and m["content"]["name"] == name
        )

    def of_type(self, *msg_types: str) -> list[dict]:
        return [m["content"] for _, m in self.outputs if m["msg_type"] in msg_types]

    @property
    def error(self) -> str | None:
        return (
            self.reply["content"].get("ename")
            if self.reply["content"]["status"] == "error"
            else None
        )


def kernel_manager(python: Path, spec_dir: Path) -> KernelManager:
    """A manager of kernels that run ``python`` (whatever kernels this machine has installed)."""
    kernel_dir = spec_dir / "sense-test"
    kernel_dir.mkdir(parents=True)
    (kernel_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "sense test",
                "language": "python",
            }
        )
    )
    specs = KernelSpecManager(kernel_dirs=[str(spec_dir)])
    return KernelManager(kernel_name="sense-test", kernel_spec_manager=specs)


def kernel_environment(env: dict[str, str]) -> dict[str, str]:
    """This process's environment, with this checkout's ``sense`` importable and ``env`` added."""
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **env}


class NotebookKernel:
    """An IPython kernel running ``python``, with ``env`` added to this process's environment."""

    def __init__(self, python: Path, spec_dir: Path, env: dict[str, str]) -> None:
        self.manager = kernel_manager(python, spec_dir)
        self.manager.start_kernel(env=kernel_environment(env))
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    @property
    def pid(self) -> int:
        return self.manager.provisioner.pid

    def run(self, code: str, timeout: float = 120) -> Cell:
        outputs: list[tuple[float, dict]] = []
        reply = self.client.execute_interactive(
            code,
            timeout=timeout,
            output_hook=lambda msg: outputs.append((time.monotonic(), msg)),
            allow_stdin=False,
        )
        return Cell(reply, outputs)

    def shutdown(self) -> None:
        self.client.stop_channels()
        if self.manager.is_alive():
            self.manager.shutdown_kernel(now=False)

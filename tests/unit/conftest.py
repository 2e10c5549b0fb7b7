"""Unit tests start no processes: every way to start one fails loudly here.

A test that needs ssh-keygen, bash, sshd, tmux, the OpenID provider, the recorder's worker process
or any other program belongs in tests/e2e. The guard covers the whole package (module-scoped
fixtures too), and a test whose code caught the refusal fails all the same.
"""

from __future__ import annotations

import _posixsubprocess
import asyncio
import asyncio.base_events
import asyncio.subprocess
import os
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

ADVICE = "unit tests start no processes: a test that starts one belongs in tests/e2e"

_ATTEMPTS = pytest.StashKey[list[str]]()


class ProcessStartRefused(RuntimeError):
    pass


def _describe(what: str, args: tuple[Any, ...]) -> str:
    command = args[0] if args else ""
    return f"{what}({command!r})" if command != "" else f"{what}()"


def _refuse(attempts: list[str], what: str, *, is_async: bool = False) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        description = _describe(what, args)
        attempts.append(description)
        raise ProcessStartRefused(f"{description}: {ADVICE}")

    async def refuse_async(*args: Any, **kwargs: Any) -> Any:
        return refuse(*args, **kwargs)

    return refuse_async if is_async else refuse


def _refuse_method(attempts: list[str], what: str) -> Callable[..., Any]:
    """For the event loop's methods: the command comes after self and the protocol factory."""
    refuse = _refuse(attempts, what)

    def method(self: Any, protocol_factory: Any, *args: Any, **kwargs: Any) -> Any:
        return refuse(*args, **kwargs)

    return method


def _refuse_popen(attempts: list[str]) -> Callable[..., Any]:
    refuse = _refuse(attempts, "subprocess.Popen")

    def execute_child(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> Any:
        return refuse(args)

    return execute_child


@pytest.fixture(scope="package", autouse=True)
def _refuse_processes(request: pytest.FixtureRequest) -> Iterator[None]:
    attempts = request.session.stash.setdefault(_ATTEMPTS, [])
    with pytest.MonkeyPatch.context() as patch:
        # subprocess.run/call/check_output, os.popen and asyncio's subprocesses all end here.
        patch.setattr(subprocess.Popen, "_execute_child", _refuse_popen(attempts))
        # multiprocessing's spawn and forkserver start methods.
        patch.setattr(_posixsubprocess, "fork_exec", _refuse(attempts, "_posixsubprocess.fork_exec"))
        for name in ("system", "fork", "forkpty", "posix_spawn", "posix_spawnp",
                     "execv", "execve", "execvp", "execvpe", "execl", "execle", "execlp", "execlpe"):
            if hasattr(os, name):
                patch.setattr(os, name, _refuse(attempts, f"os.{name}"))
        for module in (asyncio, asyncio.subprocess):
            for name in ("create_subprocess_exec", "create_subprocess_shell"):
                patch.setattr(module, name, _refuse(attempts, f"asyncio.{name}", is_async=True))
        for name in ("subprocess_exec", "subprocess_shell"):
            patch.setattr(asyncio.base_events.BaseEventLoop, name,
                          _refuse_method(attempts, f"loop.{name}"))
        yield


def _fail_if_started(item: pytest.Item) -> Iterator[None]:
    """Fails the test even when the code under test caught the refusal."""
    attempts = item.session.stash.setdefault(_ATTEMPTS, [])
    before = len(attempts)
    yield
    if attempts[before:]:
        pytest.fail(f"{', '.join(attempts[before:])}: {ADVICE}", pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:  # module-scoped fixtures too
    yield from _fail_if_started(item)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    yield from _fail_if_started(item)

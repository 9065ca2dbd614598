"""What keeps the conformance run offline and on the CPU, whatever vLLM build runs it.

`guard_network` makes any non-loopback connection raise (the tests must not reach the model
hub or anything else); `cpu_device_where_unresolved` gives vLLM's unspecified platform the CPU
as its device.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _check_address(sock: socket.socket, address: Any) -> None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    host = address[0] if isinstance(address, tuple) else address
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        if host == "localhost":
            return
    raise OSError(f"conformance: network access to {host!r} is blocked (tests run offline)")


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    _check_address(self, address)
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> Any:
    _check_address(self, address)
    return _real_connect_ex(self, address)


def guard_network() -> None:
    """Make every non-loopback connection raise OSError."""
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]


def release_network() -> None:
    """Undo `guard_network`."""
    socket.socket.connect = _real_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]


def cpu_device_where_unresolved() -> None:
    """Make the CPU the device of vLLM's unspecified platform (no effect on a resolved one).

    The tests build `DeviceConfig("auto")`, the current platform's device type, which the
    unspecified platform leaves empty: every config would fail. vLLM's own CPU platform cannot
    stand in (`VLLM_TARGET_DEVICE=cpu`): from 0.34 it refuses x86 without Triton
    (vllm/platforms/cpu.py:242-243). The scheduler-level code runs on the unspecified platform
    with a CPU device, as `lamps.harness.build_vllm_config` configures it (`DeviceConfig("cpu")`).
    """
    from vllm.platforms import current_platform

    if not current_platform.device_type:
        current_platform.device_type = "cpu"

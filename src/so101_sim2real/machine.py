"""What this machine's CPU is and can do, read once from the OS: its model and the instruction
sets that decide which number formats are fast (some 2-core EPYCs have avx512_bf16, some Xeons
AMX, others neither). Detected, never assumed."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

# The flags that make bf16 matrix products native (not emulated in fp32).
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's lines of /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        out[key.strip()] = value.strip()
    return out


def cpu_model() -> str:
    """The CPU's model name (e.g. 'AMD EPYC 9R14'), or what Python's platform says."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_flags() -> frozenset[str]:
    """The CPU's instruction-set flags as the OS lists them."""
    return frozenset(_cpuinfo().get("flags", "").split())


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (avx512_bf16 or AMX)."""
    return any(flag in cpu_flags() for flag in BF16_FLAGS)


def describe_cpu() -> str:
    """One line for benchmark tables: the model and the flags that matter for the learner."""
    flags = [f for f in REPORTED_FLAGS if f in cpu_flags()]
    return f"{cpu_model()} ({', '.join(flags) or 'no avx2/avx512/amx flags'})"

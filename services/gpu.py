"""GPU and memory figures of this machine: NVIDIA's NVML library (nvidia-ml-py) for the GPUs, psutil for memory.

NVML is the library nvidia-smi itself reads; asking it directly costs microseconds instead of a process
start, and its answers are numbers, not text to parse. A machine without the NVIDIA driver has no NVML:
the figures then say CPU, with nothing invented.
"""
from __future__ import annotations

import functools
import logging

import psutil

log = logging.getLogger(__name__)

MIB = 1024 * 1024


def system_memory() -> dict:
    memory = psutil.virtual_memory()
    total, free = memory.total / MIB, memory.available / MIB
    return {"totalMb": round(total), "usedMb": round(total - free), "freeMb": round(free),
            "percentUsed": round(100 * (total - free) / total, 1)}


@functools.lru_cache(maxsize=1)
def _nvml():
    """The initialised pynvml module, or None where there is no NVIDIA driver (checked once per process)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception as exc:  # noqa: BLE001 - ImportError, NVMLError_LibraryNotFound, NVMLError_DriverNotLoaded...
        log.debug("no NVML here: %s", exc)
        return None


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _maybe(call, *args):
    """A figure the device may not support ("[Not Supported]" in nvidia-smi): None then."""
    nvml = _nvml()
    try:
        return call(*args)
    except nvml.NVMLError:
        return None


def _processes(nvml, handle) -> list[dict]:
    found = []
    for proc in _maybe(nvml.nvmlDeviceGetComputeRunningProcesses, handle) or []:
        try:
            name = psutil.Process(proc.pid).exe()
        except (psutil.Error, OSError):
            name = ""
        used = proc.usedGpuMemory  # None where the driver does not account per process
        found.append({"pid": proc.pid, "name": name, "memoryUsedMb": round(used / MIB, 1) if used else 0.0})
    return found


def _cuda_version(nvml) -> str | None:
    version = _maybe(nvml.nvmlSystemGetCudaDriverVersion)  # e.g. 12040 for CUDA 12.4
    return f"{version // 1000}.{version % 1000 // 10}" if version else None


def gpus() -> tuple[list[dict], str | None, str | None]:
    """(each GPU's figures, the driver version, the CUDA version the driver supports); ([], None, None) without."""
    nvml = _nvml()
    if nvml is None:
        return [], None, None
    out = []
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        rates = _maybe(nvml.nvmlDeviceGetUtilizationRates, handle)
        power = _maybe(nvml.nvmlDeviceGetPowerUsage, handle)  # milliwatts
        limit = _maybe(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
        state = _maybe(nvml.nvmlDeviceGetPerformanceState, handle)
        out.append({
            "id": index, "name": _text(nvml.nvmlDeviceGetName(handle)),
            "fanSpeedPercent": _maybe(nvml.nvmlDeviceGetFanSpeed, handle),
            "performanceState": f"P{state}" if state is not None else "",
            "memory": {"totalMb": round(memory.total / MIB), "usedMb": round(memory.used / MIB),
                       "freeMb": round(memory.free / MIB)},
            "utilization": {"gpuPercent": rates.gpu if rates else None, "memoryPercent": rates.memory if rates else None},
            "temperature": {"currentCelsius": _maybe(nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)},
            "power": {"drawWatts": power / 1000 if power is not None else None,
                      "limitWatts": limit / 1000 if limit is not None else None},
            "processes": _processes(nvml, handle), "isUnifiedMemory": False,
        })
    return out, _text(nvml.nvmlSystemGetDriverVersion()), _cuda_version(nvml)

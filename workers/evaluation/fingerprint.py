"""Provenance of an evaluation: what machine, driver, compilers and library versions
produced a timing. Cached per process; never initialises CUDA in the calling process
(GPU facts come from nvidia-smi, or from a throwaway child interpreter)."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata

HARNESS_VERSION = "kturn-eval-2.0"
# Keys that identify the timing environment (volatile facts such as whether this
# particular run got a network namespace are excluded from the key).
KEY_FIELDS = ("device", "device_name", "driver_version", "cuda_runtime", "cpu_model", "cpu_count",
              "torch", "torch_cuda", "triton", "cxx", "nvcc", "python", "harness_version")
_cache: dict[str, dict] = {}


def _run(cmd: list[str], timeout: float = 20.0) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return done.stdout.strip() if done.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def compiler_versions() -> dict:
    cxx = os.environ.get("CXX", "c++")
    cxx_version = _run([cxx, "-dumpfullversion"]) or _run([cxx, "--version"]).split("\n")[0]
    nvcc = shutil.which("nvcc")
    nvcc_version = None
    if nvcc:
        lines = [l for l in _run([nvcc, "--version"]).splitlines() if "release" in l]
        nvcc_version = lines[-1].strip() if lines else None
    return {"cxx": f"{os.path.basename(cxx)} {cxx_version}".strip(), "nvcc": nvcc_version}


def _gpu_facts() -> dict:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip() or "0"
    smi = _run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader", "-i", visible])
    if smi:
        name, _, driver = smi.partition(",")
        return {"device_name": name.strip(), "driver_version": driver.strip()}
    probe = ("import json,torch;p=torch.cuda.get_device_properties(0);"
             "print(json.dumps({'device_name':p.name,'driver_version':str(torch._C._cuda_getDriverVersion())"
             " if hasattr(torch._C,'_cuda_getDriverVersion') else None}))")
    out = _run([sys.executable, "-c", probe], timeout=120)
    try:
        return json.loads(out.splitlines()[-1])
    except (ValueError, IndexError):
        return {"device_name": None, "driver_version": None}


def _torch_build() -> tuple[str | None, str | None]:
    """torch's version and the CUDA it was built for (`torch.__version__`, `torch.version.cuda`),
    read from the module torch generates for them at build, torch/version.py, loaded on its own:
    importing torch would cost a process that only fingerprints (the CLI's pre-flight) about a
    second to start and half a second to exit."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None, None
    path = os.path.join(spec.submodule_search_locations[0], "version.py")
    version_spec = importlib.util.spec_from_file_location("kturn_torch_version", path)
    version = importlib.util.module_from_spec(version_spec)
    version_spec.loader.exec_module(version)
    return version.__version__, version.cuda


def device_fingerprint(device: str) -> dict:
    if device not in _cache:
        torch_version, torch_cuda = _torch_build()
        fp = {"device": device, "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(),
              "torch": torch_version, "torch_cuda": torch_cuda, "triton": _version("triton"),
              "python": platform.python_version(), "harness_version": HARNESS_VERSION,
              "platform": platform.platform(), **compiler_versions()}
        if device == "cuda":
            fp.update(_gpu_facts())
            fp["cuda_runtime"] = torch_cuda
        else:
            fp.update({"device_name": fp["cpu_model"], "driver_version": None, "cuda_runtime": None})
        _cache[device] = fp
    return dict(_cache[device])


def fingerprint_key(fingerprint: dict) -> str:
    """Stable 16-hex-digit hash of the timing-relevant fields (missing fields count as None)."""
    material = {k: fingerprint.get(k) for k in KEY_FIELDS}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:16]


def toolchain(fingerprint: dict) -> dict:
    """What a build depends on besides its sources and environment (part of the build key): the
    compilers, libraries, architecture and C library, not the GPU or the kernel's version, so a
    CPU build host and a GPU host running the same image make the same key."""
    material = {k: fingerprint.get(k) for k in ("cxx", "nvcc", "torch", "torch_cuda", "python", "harness_version")}
    return {**material, "machine": platform.machine(), "libc": "-".join(platform.libc_ver())}

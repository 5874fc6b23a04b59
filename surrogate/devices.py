"""A small table of known GPUs: the device properties the surrogates use as features.

A record names its device by the string the driver reports (``"NVIDIA GeForce RTX 3090"``,
``"NVIDIA H100 80GB HBM3"``); :func:`device_spec` matches it to a row of :data:`DEVICE_TABLE` by substrings.
Unknown devices get ``None`` (their features are missing values), never a guess.

Sources of the numbers (peak rates at the reference boost clock, dense, no sparsity):

- RTX 2080 Ti, TITAN RTX: NVIDIA Turing GPU Architecture whitepaper (WP-09183-001), Appendix A, tables 1
  and 6 (2080 Ti: 68 SMs, 616 GB/s, 13.4 FP32 TFLOPS, 107.6 FP16 tensor TFLOPS with FP16 accumulate at the
  1545 MHz reference boost; TITAN RTX: 72 SMs, 672 GB/s, 16.3 / 130.5 TFLOPS at 1770 MHz). L2 5.5 / 6 MB.
- RTX 3090: NVIDIA Ampere GA102 GPU Architecture whitepaper (v2.1), table 9: 82 SMs, 936 GB/s, 35.6 FP32
  TFLOPS, 142 FP16 tensor TFLOPS (FP16 accumulate, dense) at 1695 MHz; L2 6 MB.
- RTX 3060 Laptop GPU: NVIDIA GeForce RTX 30 Series laptop specifications (nvidia.com product page):
  3840 CUDA cores (30 SMs), 1283-1703 MHz boost depending on the laptop's power limit, 6 GB GDDR6 at
  14 Gbps on a 192-bit bus (336 GB/s); L2 3 MB (GA106). Peak rates here use the top 1703 MHz boost, so
  they are an upper bound for low-power laptops.
- H100 SXM5 (``"NVIDIA H100 80GB HBM3"``) and H100 PCIe: NVIDIA H100 Tensor Core GPU datasheet and the
  Hopper architecture whitepaper (WP-10792-001), table 3: SXM5 132 SMs, 3.35 TB/s, 67 FP32 TFLOPS,
  989.4 FP16 tensor TFLOPS; PCIe 114 SMs, 2.0 TB/s, 51.2 / 756 TFLOPS; L2 50 MB.
- H200 (SXM): NVIDIA H200 Tensor Core GPU datasheet: same GH100 compute as H100 SXM (132 SMs, 67 FP32 and
  989 FP16 tensor TFLOPS dense) with 4.8 TB/s of HBM3e; L2 50 MB.

Per-SM limits (registers, shared memory, threads) come from the CUDA C++ Programming Guide, table
"Technical Specifications per Compute Capability" (7.5: 64 KB shared, 1024 threads; 8.6: 100 KB, 1536;
9.0: 228 KB, 2048; 64 K registers for all).
"""

from __future__ import annotations

import dataclasses
import re


@dataclasses.dataclass(frozen=True)
class DeviceSpec:
    """Properties of one GPU model.

    Attributes
    ----------
    name : str
        Canonical name.
    match : tuple of str
        Lower-case words that must all appear in a reported device name for it to match.
    sm_count : int
        Streaming multiprocessors.
    mem_bandwidth_gbs : float
        Peak device-memory bandwidth (GB/s).
    fp32_tflops : float
        Peak FP32 rate on CUDA cores (TFLOP/s).
    fp16_tensor_tflops : float
        Peak dense FP16 tensor-core rate (TFLOP/s).
    l2_mb : float
        L2 cache (MB).
    compute_capability : float
        Major + minor / 10, e.g. 8.6.
    regs_per_sm : int
        32-bit registers per SM.
    shared_kb_per_sm : int
        Shared memory per SM (KB).
    max_threads_per_sm : int
        Resident threads per SM.
    boost_clock_mhz : float
        Reference boost clock (MHz).
    """

    name: str
    match: tuple[str, ...]
    sm_count: int
    mem_bandwidth_gbs: float
    fp32_tflops: float
    fp16_tensor_tflops: float
    l2_mb: float
    compute_capability: float
    regs_per_sm: int
    shared_kb_per_sm: int
    max_threads_per_sm: int
    boost_clock_mhz: float


DEVICE_TABLE: tuple[DeviceSpec, ...] = (
    DeviceSpec("NVIDIA GeForce RTX 2080 Ti", ("2080", "ti"), 68, 616.0, 13.4, 107.6, 5.5, 7.5, 65_536, 64,
               1024, 1545.0),
    DeviceSpec("NVIDIA TITAN RTX", ("titan", "rtx"), 72, 672.0, 16.3, 130.5, 6.0, 7.5, 65_536, 64, 1024, 1770.0),
    DeviceSpec("NVIDIA GeForce RTX 3090", ("3090",), 82, 936.0, 35.6, 142.0, 6.0, 8.6, 65_536, 100, 1536, 1695.0),
    DeviceSpec("NVIDIA GeForce RTX 3060 Laptop GPU", ("3060", "laptop"), 30, 336.0, 13.1, 52.3, 3.0, 8.6,
               65_536, 100, 1536, 1703.0),
    DeviceSpec("NVIDIA H100 PCIe", ("h100", "pcie"), 114, 2000.0, 51.2, 756.0, 50.0, 9.0, 65_536, 228, 2048,
               1755.0),
    DeviceSpec("NVIDIA H100 80GB HBM3", ("h100",), 132, 3350.0, 67.0, 989.4, 50.0, 9.0, 65_536, 228, 2048, 1980.0),
    DeviceSpec("NVIDIA H200", ("h200",), 132, 4800.0, 67.0, 989.4, 50.0, 9.0, 65_536, 228, 2048, 1980.0),
)
"""Known GPUs, most specific match first (H100 PCIe before H100 SXM)."""

_WORDS = re.compile(r"[^a-z0-9]+")


def device_spec(device: str) -> DeviceSpec | None:
    """Return the :class:`DeviceSpec` whose words all occur in ``device`` (case-insensitive), or None."""
    text = " " + _WORDS.sub(" ", device.lower()) + " "
    for spec in DEVICE_TABLE:
        if all(f" {part} " in text for part in spec.match):
            return spec
    return None

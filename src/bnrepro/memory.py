"""The memory a process can still take on a device, which the trainers' memory checks weigh
their estimates against before anything is built (bnrepro.mlp_members.check_memory for the
MLP's members, bnrepro.train_packed for packed Inception members)."""

import os

import torch


def available_memory(device: torch.device) -> int:
    """Bytes this process can still take on `device`: the GPU's free memory, or on the CPU the
    kernel's MemAvailable (free memory and the page cache it can reclaim), or where there is
    no /proc/meminfo, the machine's physical memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")

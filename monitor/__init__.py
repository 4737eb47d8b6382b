"""Resource monitor: metrics now; NVML/psutil sampling and the report come with issue 4."""

"""Resource monitor: NVML/psutil sampling (sampler), request records (requestlog), Prometheus
instruments (metrics) and the one-command resource report (report). Imports no web code
and no model code."""

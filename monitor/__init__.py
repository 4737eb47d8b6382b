"""Resource monitor: NVML/psutil sampling (sampler), request records (requestlog) and Prometheus
instruments (metrics). Imports nothing else of the project; the resource report that reads
what it collects over HTTP is the loadreport package."""

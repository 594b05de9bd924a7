"""What runs beside the service: nginx.conf (docker-compose, make cluster, tests/cluster) and cluster.py, the supervisor of make cluster."""

"""The simulated three-host deployment (`make cluster`): network namespaces on one machine,
each host with its own supervisord, Redis and Sentinel (docs/ha.md)."""

from deploy.cluster.cluster import Cluster
from deploy.cluster.deploys import ClusterDeployResult
from deploy.cluster.hosts import Host
from deploy.cluster.status import ClusterStatus

__all__ = ["Cluster", "ClusterDeployResult", "ClusterStatus", "Host"]

"""The local control plane with one real node: containerd, runc, the CNI bridge and the real kubelet.

`python -m realnode up|down|status|image` (`make cluster-real`, `make cluster-real-down`,
`make image`). The fake-kubelet cluster (localcluster) stays the one for the fast
suite and the benchmark; this one is for what only a real node shows: the
project's image, its manifests as deployed, containers, readiness probes,
termination grace, a Pod network.
"""

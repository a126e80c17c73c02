"""A real Kubernetes control plane on this machine, for tests and demos.

`python -m localcluster up|down|status` (run as `make cluster` / `make
cluster-down`) starts etcd, kube-apiserver and kube-controller-manager of the
pinned Kubernetes version, plus a fake kubelet that runs each Pod's command as
a local process on its own loopback address. No Docker, no VM, no network:
the whole cluster lives in `.cluster/` and on 127.0.0.0/8.

Modules: `cluster` (lifecycle of the processes), `pki` (certificates),
`kubelet` (the fake node), `procs` (pid files, process groups), `testing`
(helpers for the pytest fixtures).
"""

"""A real Kubernetes control plane on this machine, for tests and demos.

`python -m localcluster up|down|status` (run as `make cluster` / `make
cluster-down`) starts etcd, kube-apiserver and kube-controller-manager of the
pinned Kubernetes version, plus a fake kubelet that runs each Pod's command as
a local process on its own loopback address. No Docker, no VM, no network:
the whole cluster lives in `.cluster/` and on 127.0.0.0/8.

Modules: `cluster` (lifecycle of the processes), `pki` (certificates),
`procs` (pid files, process groups), `kubelet` (the fake node, with `pods`
for one Pod, `podspec` for the pure rules of a Pod spec and `kubeapi` for
its API calls), `testing` (helpers for the pytest fixtures), `kubectl`,
`waiting` (bounded waits) and `net` (free ports).

For the operator on that cluster: `operator` (the operator in a process of
its own, as the tests, the benchmark and the demo run it), `bots`
(ScheduledBots driven with kubectl), `meeting` (the local meeting server) and
`demo` (`make demo`).
"""

"""The fault-injection suite: scenarios that abuse the operator, the control plane and the bot Pods.

`python -m chaos` (`make chaos`) runs them on the local cluster and prints one table row per
scenario (docs/reliability.md). Modules: `scenarios` (what each does and expects), `harness`
(one run: namespace, operators, bots, faults, records), `kube` (the harness's own API client
and watches), `probe` (/healthz latency), `verdicts` (the pure rules and figures), `report`
(the table), `runner` (the budget).
"""

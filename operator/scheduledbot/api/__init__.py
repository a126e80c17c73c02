"""The ScheduledBot API: what users write and what the operator reports.

Modules: `joinat` (the joinAt language's user-facing errors), `platforms` (meeting URL -> platform),
`models` (spec and status models, states, `parse_spec`), `resource` (group,
version, names), `crd` (the CRD generated from the models; `make crds`),
`errors` (field errors that name their path).

This layer imports no kopf, no Kubernetes client and no asyncio: it is pure
data and validation, shared by the operator, its webhook and the tests.
"""

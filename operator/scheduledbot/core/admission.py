"""What the admission webhook decides about a ScheduledBot, without asking anyone.

Why here and not in the CRD
===========================
The schema and CEL rules hold even while the operator is down, so everything that
can live there does. What cannot: "joinAt is not in the past" (CEL has no clock),
"the meeting URL belongs to a supported platform" (the admin may allow an extra
host, an operator setting), everything that depends on the bot's BotClass (another
object), and whether the author may create the Pod an inline template describes
(a question for the API server's authorizer). The operator applies the rules that
need no one else as a backstop when the webhook was not called.

The steps of a review
=====================
`ratchets` first: an UPDATE that leaves the spec as it was, and any update of an
object being deleted, is admitted without a look (the operator's own finalizer
removal must never be refused, nor a label edit of a bot whose class changed
since). Then `assess` applies every rule it can decide alone and returns the Pod
the operator would create and the access checks to ask the API server about; the
runtime asks them (SubjectAccessReviews for the author) and runs the server-side
dry run, and `verdict` turns the answers into the list of refusals.

The access review
=================
An inline template is admitted only if its author could create that Pod
themselves in the bot's namespace: `create pods` there, `get` on every Secret,
ConfigMap and PersistentVolumeClaim it references. Kubernetes has no verb for
"use a ServiceAccount": whoever may create Pods in a namespace may run them as
any of its ServiceAccounts (the ServiceAccount admission plugin checks only that
it exists). So a `serviceAccountName` is checked with `create pods`, exactly the
right it takes to do the same without the operator, and the message says so.
Reading a Secret is stricter than Kubernetes, where creating a Pod is enough to
mount any Secret of the namespace: the operator could otherwise hand a Secret's
value back through the bot's status, so it asks for the right to read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from scheduledbot.api.errors import SpecError, quote_value
from scheduledbot.api.models import ValidSpec, parse_spec
from scheduledbot.core.botpod import Refusal, bot_pod
from scheduledbot.core.children import secret_name
from scheduledbot.core.model import Defaults
from scheduledbot.core.templates import ClassCatalog, EffectiveTemplate, ReferenceKind, TemplateSource, references
from scheduledbot.timestamps import format_time

#: The furthest ahead a bot may be scheduled.
MAX_AHEAD: Final = timedelta(days=3 * 365)
#: The owner uid of the Pod built for a review: a ScheduledBot under admission has none yet.
REVIEW_UID: Final = "00000000-0000-0000-0000-000000000000"
#: The token Secret's tag in that Pod: the real one needs the uid.
REVIEW_TAG: Final = "0" * 10

_RESOURCES: Final = {
    ReferenceKind.SECRET: "secrets",
    ReferenceKind.CONFIG_MAP: "configmaps",
    ReferenceKind.PERSISTENT_VOLUME_CLAIM: "persistentvolumeclaims",
}


def admit(
    *,
    operation: str,
    spec: dict[str, Any],
    old_spec: dict[str, Any] | None,
    now: datetime,
    extra_hosts: frozenset[str],
) -> list[str]:
    """The reasons to reject a CREATE or UPDATE of a ScheduledBot by its own fields; empty to admit it."""
    try:
        valid = parse_spec(spec, extra_hosts=extra_hosts)
    except SpecError as error:
        return list(error.messages)
    if operation == "CREATE" or _join_at_changed(valid, old_spec, extra_hosts):
        return _clock_rules(valid, now)
    return []


def ratchets(*, operation: str, spec: Any, old_spec: Any, deleting: bool) -> bool:
    """An UPDATE admitted without a look: the spec is unchanged, or the object is being deleted."""
    return operation == "UPDATE" and (deleting or spec == old_spec)


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessCheck:
    """One question for the API server's authorizer, about the author, in the bot's namespace."""

    verb: str
    resource: str
    name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessNeed:
    """Why a template needs `check`: the field that asks for it, and what to say if it is denied."""

    path: str
    check: AccessCheck
    #: Completes "user X may not ...".
    what: str
    why: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Assessment:
    """What `assess` found: refusals it could decide alone, else the Pod and the questions to ask."""

    refusals: tuple[str, ...] = ()
    #: The Pod the operator would create, for the server-side dry run.
    pod: dict[str, Any] | None = None
    #: Where that Pod's template comes from, as messages name it.
    template_prefix: str = "spec.template"
    needs: tuple[AccessNeed, ...] = field(default=())

    @property
    def checks(self) -> tuple[AccessCheck, ...]:
        """The distinct questions, in the order of first need."""
        return tuple(dict.fromkeys(need.check for need in self.needs))


def assess(
    *,
    operation: str,
    name: str,
    namespace: str,
    spec: dict[str, Any],
    old_spec: dict[str, Any] | None,
    now: datetime,
    extra_hosts: frozenset[str],
    classes: ClassCatalog,
    default_template: Mapping[str, Any],
    defaults: Defaults,
    self_join_delay_seconds: float,
) -> Assessment:
    """Every rule the webhook can decide alone, for a CREATE or an UPDATE that changes the spec."""
    refusals = admit(operation=operation, spec=spec, old_spec=old_spec, now=now, extra_hosts=extra_hosts)
    if refusals:
        return Assessment(refusals=tuple(refusals))
    valid = parse_spec(spec, extra_hosts=extra_hosts)
    built = bot_pod(
        name=name,
        namespace=namespace,
        uid=REVIEW_UID,
        spec=valid,
        classes=classes,
        default_template=default_template,
        defaults=defaults,
        self_join_delay_seconds=self_join_delay_seconds,
        join_at=valid.join_at,
        token_secret=secret_name(name, REVIEW_TAG),
    )
    if isinstance(built, Refusal):
        return Assessment(refusals=built.problems)
    effective = built.template
    pod = built.pod
    needs = access_needs(effective, namespace=namespace) if effective.source is TemplateSource.INLINE else ()
    return Assessment(pod=pod, template_prefix=effective.prefix, needs=tuple(needs))


def access_needs(effective: EffectiveTemplate, *, namespace: str) -> list[AccessNeed]:
    """What the author of an inline template must be allowed, field by field."""
    ns = quote_value(namespace)
    pods = AccessCheck(verb="create", resource="pods")
    needs = [
        AccessNeed(
            path=effective.prefix,
            check=pods,
            what=f"create Pods in namespace {ns}",
            why="an inline template is admitted only for authors who could create its Pod themselves; "
            "use a BotClass instead",
        )
    ]
    for reference in references(effective.template, prefix=effective.prefix):
        shown = f"{reference.kind} {quote_value(reference.name)} in namespace {ns}"
        if reference.kind is ReferenceKind.SERVICE_ACCOUNT:
            needs.append(
                AccessNeed(
                    path=reference.path,
                    check=pods,
                    what=f"run Pods as {shown}",
                    why="RBAC: create pods, the right that lets a user run a Pod as any ServiceAccount of "
                    "its namespace",
                )
            )
        else:
            resource = _RESOURCES[reference.kind]
            needs.append(
                AccessNeed(
                    path=reference.path,
                    check=AccessCheck(verb="get", resource=resource, name=reference.name),
                    what=f"read {shown}",
                    why=f"RBAC: get {resource}",
                )
            )
    return needs


def verdict(
    assessment: Assessment, *, user: str, allowed: Mapping[AccessCheck, bool], dry_run_refusal: str | None
) -> list[str]:
    """The refusals of a review: the assessment's, the access review's and the dry run's; empty to admit."""
    if assessment.refusals:
        return list(assessment.refusals)
    who = quote_value(user)
    refusals = [
        f"{need.path}: user {who} may not {need.what} ({need.why})"
        for need in assessment.needs
        if not allowed.get(need.check, False)
    ]
    if not refusals and dry_run_refusal:
        refusals.append(f"{assessment.template_prefix}: the bot Pod would be refused: {dry_run_refusal}")
    return refusals


def _join_at_changed(valid: ValidSpec, old_spec: dict[str, Any] | None, extra_hosts: frozenset[str]) -> bool:
    if old_spec is None:
        return True
    try:
        return parse_spec(old_spec, extra_hosts=extra_hosts).join_at != valid.join_at
    except SpecError:
        return True


def _clock_rules(valid: ValidSpec, now: datetime) -> list[str]:
    if valid.join_at < now:
        return [f"spec.joinAt cannot be in the past: {format_time(valid.join_at)} is before now ({format_time(now)})"]
    if valid.join_at > now + MAX_AHEAD:
        return [
            f"spec.joinAt cannot be more than 3 years ahead: {format_time(valid.join_at)} "
            f"is after {format_time(now + MAX_AHEAD)}"
        ]
    return []

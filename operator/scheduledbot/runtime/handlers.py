"""kopf handlers: thin. They hand watch events to the engine and BotClasses to the webhook.

The engine, the webhook's reviewer and its server are built at start-up from the
settings in kopf's memo and kept there; nothing is built at import time. kopf's own
admission machinery is not used (runtime/admission.py says why).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import kopf

from scheduledbot.adapters.bots import BotClient
from scheduledbot.adapters.kube import Kube, Permission
from scheduledbot.api.resource import BOT_CLASS, GROUP, PLURAL, VERSION
from scheduledbot.core.children import LABEL
from scheduledbot.runtime.admission import AdmissionServer, Reviewer
from scheduledbot.runtime.classes import ClassCatalog
from scheduledbot.runtime.config import Settings
from scheduledbot.runtime.engine import Engine
from scheduledbot.runtime.health import HealthServer, LoopHealth
from scheduledbot.runtime.leader import LeaderElector, identity
from scheduledbot.runtime.metrics import Metrics
from scheduledbot.runtime.notify import Notifications
from scheduledbot.runtime.schedules import SCHEDULE_WATCHES
from scheduledbot.runtime.webhook import (
    WEBHOOK_NAMES,
    build_configuration,
    make_certificates,
    server_context,
    service_names,
)
from scheduledbot.runtime.webhook_ca import secret_name as ca_secret_name
from scheduledbot.runtime.webhook_ca import shared_authority

log = logging.getLogger(__name__)

#: What kopf's watches need, beside the adapters' calls (`scheduledbot.adapters.kube.PERMISSIONS`).
WATCHES: Final = (
    frozenset(
        Permission(group, resource, verb)
        for group, resource in (("", "pods"), (GROUP, PLURAL), (GROUP, BOT_CLASS.plural))
        for verb in ("list", "watch")
    )
    | SCHEDULE_WATCHES
)


class _NoDiffBase(kopf.DiffBaseStorage):
    """kopf's last handled state, not kept: every handler here is `on.event`, which compares nothing.

    Its default storage builds the state to compare from every watch event anyway (a deep
    copy of the whole body, managedFields and status included): a twentieth of the
    operator's loop at a join instant of 1,000 bots (py-spy), for a diff no handler reads.
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


#: Objects per page of a start-up list (kopf's `watching.chunk_size`).
_LIST_PAGE = 500


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config: Settings = memo.settings
    # Our events go through the adapters; kopf's per-handler events would be extra writes.
    settings.posting.enabled = False
    settings.persistence.diffbase_storage = _NoDiffBase()
    # kopf keeps an object's worker this long after its last event (default 5 s): at a
    # restart's relist that is one worker for each of 10,000 bots at once, for nothing.
    settings.queueing.idle_timeout = 0.5
    settings.watching.server_timeout = 600
    # The start-up list comes in pages, each handed on before the next is fetched: one list
    # of 10,000 bots parsed at once left its peak in the allocator's arenas for good.
    settings.watching.chunk_size = _LIST_PAGE
    # The resources are known in advance: no watching of CRDs and namespaces, and no RBAC for it.
    settings.scanning.disabled = True
    kube = await Kube.connect()
    metrics = Metrics()
    metrics.serve(config.metrics_port, address=config.metrics_listen)
    memo.kube = kube
    memo.metrics = metrics
    memo.bots = BotClient()
    # Every class known before the first review or pass: one answered without the default
    # class would skip its rules. kopf's watch keeps the catalog current from here on.
    memo.classes = ClassCatalog()
    memo.classes.replace(await kube.list_bot_classes())
    notifications = Notifications(settings=config, kube=kube, registry=metrics.registry)
    memo.elector = None
    if config.leader_election:
        memo.elector = LeaderElector(
            kube=kube,
            namespace=config.leader_election_namespace,
            name=config.leader_election_lease_name,
            identity=identity(),
            timing=config.leader_election_timing,
            metrics=metrics,
        )
        memo.engine = Engine(
            settings=config,
            kube=kube,
            bots=memo.bots,
            metrics=metrics,
            classes=memo.classes,
            leading=memo.elector.leading,
            notifications=notifications,
        )
    else:
        memo.engine = Engine(
            settings=config,
            kube=kube,
            bots=memo.bots,
            metrics=metrics,
            classes=memo.classes,
            notifications=notifications,
        )
    if config.token_key_file is None:
        log.warning(
            "no --token-key-file: bot tokens are derived from a key made for this start only; bots staged "
            "before a restart will refuse this operator's calls (they still join on their own)"
        )
    # Know the bot Pods before the first pass: kopf's Pod watch may deliver them after
    # their ScheduledBots, and a staged bot must not look as if its Pod were gone.
    for namespace in config.namespaces or (None,):
        for pod in await kube.list_pods(namespace, label=LABEL):
            memo.engine.pod_event(None, pod)
    if config.webhook:
        await _serve_webhook(memo, config, kube)
    if memo.elector is not None:
        # After the picture is complete: this replica passes every bot and schedule when it first leads.
        memo.elector.start(on_leading=lambda: _on_leading(memo))


async def serve_health(memo: kopf.Memo, **_: Any) -> None:
    """The last start-up handler (main.py registers it after all others): /healthz answers once
    the operator is ready, and from then on whatever its loop does.

    Not sooner: kopf runs no clean-up handler after a start-up it cancelled, so a SIGTERM
    that came while a later start-up handler still ran, to an operator whose /healthz already
    answered, left its webhook registration behind (an e2e test caught it).
    """
    config: Settings = memo.settings
    memo.health = HealthServer(
        LoopHealth(asyncio.get_running_loop()), host=config.health_listen, port=config.health_port
    )
    memo.health.start()


def _on_leading(memo: kopf.Memo) -> None:
    memo.engine.wake_all()
    # The BotSchedule controller (runtime/schedule_handlers.py) starts after this handler.
    if getattr(memo, "schedules", None) is not None:
        memo.schedules.wake_all()


async def _serve_webhook(memo: kopf.Memo, config: Settings, kube: Kube) -> None:
    directory = config.webhook_cert_dir or Path(tempfile.mkdtemp(prefix="scheduledbot-webhook-"))
    ca: bytes | None = None
    if config.webhook_configuration == "external":
        cert, key = directory / "tls.crt", directory / "tls.key"
    else:
        names = service_names(config.webhook_service) if config.webhook_service else [config.webhook_host]
        now = datetime.now(UTC)
        authority = None
        if config.leader_election and config.webhook_configuration == "patch":
            # Replicas behind one Service must all be trusted by the one caBundle.
            authority = await shared_authority(
                kube,
                namespace=config.leader_election_namespace,
                name=ca_secret_name(config.webhook_config_name),
                now=now,
            )
        cert, key, ca = make_certificates(directory, names=names, now=now, authority=authority)
    reviewer = Reviewer(settings=config, kube=kube, classes=memo.classes)
    server = AdmissionServer(
        review=lambda request, authenticated: reviewer.review(request, authenticated=authenticated),
        client_names=config.webhook_client_names,
        on_result=lambda result: memo.metrics.admission_reviews.labels(result).inc(),
    )
    await server.start(
        host=config.webhook_listen,
        port=config.webhook_port,
        ssl_context=server_context(cert, key, client_ca=config.webhook_client_ca_file),
    )
    memo.webhook_server = server
    if ca is None:
        return
    if config.webhook_configuration == "patch":
        bundle = base64.b64encode(ca).decode()
        await kube.patch_webhook_ca(config.webhook_config_name, webhooks=WEBHOOK_NAMES, ca_bundle=bundle)
        return
    body = build_configuration(
        name=config.webhook_config_name,
        ca_pem=ca,
        host=config.webhook_host,
        port=config.webhook_port,
        service=config.webhook_service,
        namespaces=config.namespaces,
    )
    await kube.apply_webhook_configuration(body)
    memo.webhook_ca = body["webhooks"][0]["clientConfig"]["caBundle"]


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    config: Settings = memo.settings
    if getattr(memo, "elector", None) is not None:
        # First: no write after this, and the standby takes over at its next round.
        await memo.elector.stop()
    if getattr(memo, "health", None):
        memo.health.stop()
    if getattr(memo, "webhook_server", None):
        await memo.webhook_server.stop()
    await memo.engine.close()
    await memo.bots.close()
    if getattr(memo, "webhook_ca", None):
        # Only our own: a newer instance may have taken the configuration over.
        await memo.kube.delete_webhook_configuration(config.webhook_config_name, ca_bundle=memo.webhook_ca)
    await memo.kube.close()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def bot_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    memo.engine.bot_event(event.get("type"), event["object"])


@kopf.on.event("", "v1", "pods", labels={LABEL: kopf.PRESENT})
async def pod_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    memo.engine.pod_event(event.get("type"), event["object"])


@kopf.on.event(GROUP, VERSION, BOT_CLASS.plural)
async def bot_class_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    memo.classes.event(event.get("type"), event["object"])

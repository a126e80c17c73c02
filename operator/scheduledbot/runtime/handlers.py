"""kopf handlers: thin. They hand watch events to the engine and reviews to `core.admission`.

The engine is built at start-up from the settings in kopf's memo and kept there;
nothing is built at import time.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf

from scheduledbot.adapters.bots import BotClient
from scheduledbot.adapters.kube import Kube
from scheduledbot.api.models import parse_spec
from scheduledbot.api.resource import GROUP, PLURAL, VERSION
from scheduledbot.core.admission import admit
from scheduledbot.core.children import LABEL
from scheduledbot.runtime.config import Settings
from scheduledbot.runtime.engine import Engine
from scheduledbot.runtime.metrics import Metrics
from scheduledbot.runtime.webhook import WEBHOOK_PATH, build_configuration, make_certificates, service_names


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config: Settings = memo.settings
    # Our events go through the adapters; kopf's per-handler events would be extra writes.
    settings.posting.enabled = False
    # kopf waits this long for more events of one object before handling the last one;
    # its 0.1 s default would delay every state report by as much.
    settings.batching.batch_window = 0.01
    settings.watching.server_timeout = 600
    # The resources are known in advance: no watching of CRDs and namespaces, and no RBAC for it.
    settings.scanning.disabled = True
    kube = await Kube.connect()
    metrics = Metrics()
    metrics.serve(config.metrics_port)
    memo.kube = kube
    memo.bots = BotClient()
    memo.engine = Engine(settings=config, kube=kube, bots=memo.bots, metrics=metrics)
    # Know the bot Pods before the first pass: kopf's Pod watch may deliver them after
    # their ScheduledBots, and a staged bot must not look as if its Pod were gone.
    for namespace in config.namespaces or (None,):
        for pod in await kube.list_pods(namespace, label=LABEL):
            memo.engine.pod_event(None, pod)
    if config.webhook:
        await _serve_webhook(settings, memo, config, kube)


async def _serve_webhook(settings: kopf.OperatorSettings, memo: kopf.Memo, config: Settings, kube: Kube) -> None:
    directory = config.webhook_cert_dir or Path(tempfile.mkdtemp(prefix="scheduledbot-webhook-"))
    names = service_names(config.webhook_service) if config.webhook_service else [config.webhook_host]
    cert, key, ca = make_certificates(directory, names=names, now=datetime.now(UTC))
    settings.admission.server = kopf.WebhookServer(
        addr=config.webhook_listen, port=config.webhook_port, certfile=str(cert), pkeyfile=str(key)
    )
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


@kopf.on.validate(GROUP, VERSION, PLURAL, id=WEBHOOK_PATH, operations=["CREATE", "UPDATE"])
async def validate(
    body: kopf.Body, memo: Any, old: kopf.Body | None = None, operation: str | None = None, **_: Any
) -> None:
    config: Settings = memo.settings
    spec = dict(body.get("spec") or {})
    errors = admit(
        operation=operation or "CREATE",
        spec=spec,
        old_spec=dict(old.get("spec") or {}) if old else None,
        now=datetime.now(UTC),
        extra_hosts=config.extra_meeting_hosts,
    )
    if errors:
        raise kopf.AdmissionError("; ".join(errors), code=422)
    meta = body.get("metadata") or {}
    refusal = await memo.engine.pod_refusal(
        namespace=meta.get("namespace") or "default",
        name=meta.get("name") or "dry-run",
        spec=parse_spec(spec, extra_hosts=config.extra_meeting_hosts),
    )
    if refusal:
        raise kopf.AdmissionError(f"spec.template: the bot Pod would be refused: {refusal}", code=422)

"""`scheduledbot-operator`: parse the settings, set up logging, run kopf."""

from __future__ import annotations

import json
import logging
import sys

import kopf

from scheduledbot.runtime import config as config_module


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _logging(level: str, form: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _JsonFormatter() if form == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # kopf logs every handled watch event ("Handler 'pod_event' succeeded") at INFO:
    # thousands of lines an hour that say nothing; keep them for DEBUG.
    if level != "DEBUG":
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> None:
    settings = config_module.with_token_key(config_module.load(argv))
    _logging(settings.log_level, settings.log_format)
    # Imported here, after the settings parsed: importing registers the kopf handlers
    # (the engine's first: the schedules' start-up handler uses the metrics registry it builds).
    from scheduledbot.runtime import handlers, schedule_handlers  # noqa: F401, PLC0415

    # After every other start-up handler: /healthz says the whole start-up is done.
    kopf.on.startup()(handlers.serve_health)

    kopf.run(
        standalone=True,  # no kopf peering: replicas coordinate through a Lease (runtime/leader.py)
        clusterwide=not settings.namespaces,
        namespaces=list(settings.namespaces),
        # No kopf liveness endpoint: /healthz has a thread of its own (runtime/health.py).
        memo=kopf.Memo(settings=settings),
    )


if __name__ == "__main__":
    main()

"""The identity of the resources: group, version, names of ScheduledBot and BotClass.

Kept apart from the CRD generator so that the runtime can name the resource
(kopf handlers, API calls) without importing the generator.
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "meetingbots.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "ScheduledBot"
LIST_KIND: Final = "ScheduledBotList"
PLURAL: Final = "scheduledbots"
SINGULAR: Final = "scheduledbot"
SHORT_NAMES: Final = ("sbot",)
CATEGORIES: Final = ("meetingbots",)
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

#: BotClass: cluster-scoped, owned by the platform team (scheduledbot.api.botclass).
BOT_CLASS_KIND: Final = "BotClass"
BOT_CLASS_LIST_KIND: Final = "BotClassList"
BOT_CLASS_PLURAL: Final = "botclasses"
BOT_CLASS_SINGULAR: Final = "botclass"
BOT_CLASS_SHORT_NAMES: Final = ("bclass",)

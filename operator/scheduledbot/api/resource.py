"""The resources' identity: group, version, names (ScheduledBot, BotSchedule, BotClass).

Kept apart from the CRD generator so that the runtime can name the resource
(kopf handlers, API calls) without importing the generator.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Names:
    """One kind of the group: what the CRD's `names` and the API paths need."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    categories: tuple[str, ...] = CATEGORIES

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


SCHEDULED_BOT: Final = Names(kind=KIND, plural=PLURAL, short_names=SHORT_NAMES)
BOT_SCHEDULE: Final = Names(kind="BotSchedule", plural="botschedules", short_names=("bsched",))
#: BotClass: cluster-scoped, owned by the platform team (scheduledbot.api.botclass).
BOT_CLASS: Final = Names(kind="BotClass", plural="botclasses", short_names=("bclass",))

"""Which Pod template a bot runs, and what that template reaches.

Where the template comes from
=============================
`bot_class_for` picks the bot's BotClass: the one it names, else the one class
annotated as default (several defaults is an error, as with IngressClass: the
author must choose). `effective_template` then picks the template:

1. the ScheduledBot's inline `spec.template`, if it has one; refused when its
   class does not allow inline templates. It replaces the class's template
   entirely: merging two authors' Pods would make neither responsible for the
   result. With no class at all, an inline template is allowed: the access
   review (the author could create this Pod) and the baseline check still apply,
   so it grants nothing the author did not have.
2. else the class's template,
3. else the operator's default template.

What a template reaches
=======================
`references` lists the Secrets, ConfigMaps, PersistentVolumeClaims and the
ServiceAccount a template names: through environment variables (`env`,
`envFrom`), volumes (including projected and CSI / in-tree secret references)
and image pull Secrets. The admission webhook asks the API server whether the
ScheduledBot's author may read each one (a SubjectAccessReview), and the list
is what a reviewer wants to see before allowing a class or a template.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from scheduledbot.api.botclass import BrokenClass, ValidBotClass
from scheduledbot.api.errors import FieldError
from scheduledbot.core.podsecurity import CONTAINER_LISTS

ClassCatalog = Mapping[str, ValidBotClass | BrokenClass]


class TemplateSource(enum.StrEnum):
    INLINE = "inline"
    CLASS = "class"
    DEFAULT = "default"


@dataclass(frozen=True, slots=True, kw_only=True)
class EffectiveTemplate:
    template: Mapping[str, Any]
    source: TemplateSource
    #: Prefix of the template's field paths in messages: `spec.template`, or the class's.
    prefix: str


class ReferenceKind(enum.StrEnum):
    SECRET = "Secret"
    CONFIG_MAP = "ConfigMap"
    PERSISTENT_VOLUME_CLAIM = "PersistentVolumeClaim"
    SERVICE_ACCOUNT = "ServiceAccount"


@dataclass(frozen=True, slots=True, kw_only=True)
class Reference:
    kind: ReferenceKind
    name: str
    #: Where the template names it, e.g. `spec.template.spec.containers[0].envFrom[0].secretRef.name`.
    path: str


def bot_class_for(name: str | None, classes: ClassCatalog) -> ValidBotClass | FieldError | None:
    """The class a bot naming `name` (None: naming none) belongs to; a `FieldError` when none can be used."""
    if name is not None:
        found = classes.get(name)
        if found is None:
            return FieldError("spec.botClassName", f'BotClass "{name}" does not exist')
        return _usable(found)
    defaults = sorted((c for c in classes.values() if c.is_default), key=lambda c: c.name)
    if len(defaults) > 1:
        names = ", ".join(c.name for c in defaults)
        return FieldError(
            "spec.botClassName",
            f"is required: several BotClasses are marked default ({names}); name one of them",
        )
    return _usable(defaults[0]) if defaults else None


def _usable(found: ValidBotClass | BrokenClass) -> ValidBotClass | FieldError:
    if isinstance(found, BrokenClass):
        problems = "; ".join(found.problems)
        return FieldError("spec.botClassName", f'BotClass "{found.name}" is invalid and cannot be used: {problems}')
    return found


def effective_template(
    *, inline: Mapping[str, Any] | None, bot_class: ValidBotClass | None, default: Mapping[str, Any]
) -> EffectiveTemplate | FieldError:
    """The template the bot's Pod is built from, by the rules of the module's docstring."""
    if inline is not None:
        if bot_class is not None and not bot_class.allow_inline_template:
            return FieldError(
                "spec.template",
                f'not allowed: BotClass "{bot_class.name}" does not allow inline templates '
                "(its spec.allowInlineTemplate is false); remove spec.template to use the class's",
            )
        return EffectiveTemplate(template=inline, source=TemplateSource.INLINE, prefix="spec.template")
    if bot_class is not None and bot_class.template is not None:
        return EffectiveTemplate(
            template=bot_class.template,
            source=TemplateSource.CLASS,
            prefix=f'BotClass "{bot_class.name}" spec.template',
        )
    return EffectiveTemplate(template=default, source=TemplateSource.DEFAULT, prefix="the operator's default template")


#: Volume sources that name a Secret: the key holding the reference, and the key of the name in it.
_SECRET_VOLUME_REFERENCES: Final = (
    ("secret", None, "secretName"),
    ("azureFile", None, "secretName"),
    ("csi", "nodePublishSecretRef", "name"),
    ("cephfs", "secretRef", "name"),
    ("rbd", "secretRef", "name"),
    ("iscsi", "secretRef", "name"),
    ("flexVolume", "secretRef", "name"),
    ("scaleIO", "secretRef", "name"),
    ("storageos", "secretRef", "name"),
)


def references(template: Mapping[str, Any], *, prefix: str) -> list[Reference]:
    """The Secrets, ConfigMaps, PersistentVolumeClaims and ServiceAccount `template` names, in field order."""
    spec = _map(template.get("spec"))
    out: list[Reference] = []

    def add(kind: ReferenceKind, name: Any, path: str) -> None:
        if isinstance(name, str) and name:
            out.append(Reference(kind=kind, name=name, path=f"{prefix}.{path}"))

    for field in ("serviceAccountName", "serviceAccount"):
        add(ReferenceKind.SERVICE_ACCOUNT, spec.get(field), f"spec.{field}")
    for index, secret in enumerate(_list(spec.get("imagePullSecrets"))):
        add(ReferenceKind.SECRET, _map(secret).get("name"), f"spec.imagePullSecrets[{index}].name")
    for index, item in enumerate(_list(spec.get("volumes"))):
        volume = _map(item)
        base = f"spec.volumes[{index}]"
        for source, holder, key in _SECRET_VOLUME_REFERENCES:
            node = _map(volume.get(source))
            if holder is not None:
                add(ReferenceKind.SECRET, _map(node.get(holder)).get(key), f"{base}.{source}.{holder}.{key}")
            else:
                add(ReferenceKind.SECRET, node.get(key), f"{base}.{source}.{key}")
        add(ReferenceKind.CONFIG_MAP, _map(volume.get("configMap")).get("name"), f"{base}.configMap.name")
        claim = _map(volume.get("persistentVolumeClaim")).get("claimName")
        add(ReferenceKind.PERSISTENT_VOLUME_CLAIM, claim, f"{base}.persistentVolumeClaim.claimName")
        for number, entry in enumerate(_list(_map(volume.get("projected")).get("sources"))):
            projected = _map(entry)
            at = f"{base}.projected.sources[{number}]"
            add(ReferenceKind.SECRET, _map(projected.get("secret")).get("name"), f"{at}.secret.name")
            add(ReferenceKind.CONFIG_MAP, _map(projected.get("configMap")).get("name"), f"{at}.configMap.name")
    for path, container in _containers(spec):
        for index, variable in enumerate(_list(container.get("env"))):
            value_from = _map(_map(variable).get("valueFrom"))
            at = f"{path}.env[{index}].valueFrom"
            add(ReferenceKind.SECRET, _map(value_from.get("secretKeyRef")).get("name"), f"{at}.secretKeyRef.name")
            config_map = _map(value_from.get("configMapKeyRef")).get("name")
            add(ReferenceKind.CONFIG_MAP, config_map, f"{at}.configMapKeyRef.name")
        for index, item in enumerate(_list(container.get("envFrom"))):
            env_from = _map(item)
            at = f"{path}.envFrom[{index}]"
            add(ReferenceKind.SECRET, _map(env_from.get("secretRef")).get("name"), f"{at}.secretRef.name")
            add(ReferenceKind.CONFIG_MAP, _map(env_from.get("configMapRef")).get("name"), f"{at}.configMapRef.name")
    return out


def _containers(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for field in CONTAINER_LISTS:
        for index, container in enumerate(_list(spec.get(field))):
            yield f"spec.{field}[{index}]", _map(container)


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []

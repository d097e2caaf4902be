"""Pieces every part of the model shares: the strict base model, names, labels, ports."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# Names are matched whole (fullmatch): `$` would accept a trailing newline.
POD_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?")
SERVICE_NAME = re.compile(r"[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?")
NAMESPACE_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")  # a DNS label, as Kubernetes has it
LAB_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?")  # also names the lab's netns, state dir, marks
# Kubernetes label keys ([prefix/]name) and values.
LABEL_NAME = re.compile(r"([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
DEFAULT_NAMESPACE = "default"
MAX_REPLICAS = 50


class Strict(BaseModel):
    # populate_by_name: camelCase keys from Kubernetes (serviceAccount, targetPort) are attributes in snake_case.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        if not LABEL_NAME.fullmatch(key):
            raise ValueError(f"label key '{key}' is not a Kubernetes label name ([prefix/]name, e.g. app or "
                             "app.kubernetes.io/name)")
        if not isinstance(value, str) or not LABEL_VALUE.fullmatch(value):
            raise ValueError(f"label {key}: {value!r} is not a label value (up to 63 of A-Z, a-z, 0-9, '-', '_', "
                             "'.'; quote numbers and booleans in YAML: version: \"1\")")
    return labels


# Checked wherever it is used: pods, namespaces, selectors, resource metadata.
Labels = Annotated[dict[str, str], Field(default_factory=dict), AfterValidator(check_labels)]


Port = Annotated[int, Field(ge=1, le=65535)]


def matching(pattern: re.Pattern[str], message: str) -> AfterValidator:
    """A validator for text that must match `pattern` whole; `message` names the problem, `{}` the value."""
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(message.format(value))
        return value

    return AfterValidator(check)

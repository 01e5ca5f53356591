"""The stand-in API server's object shapes: times as the API server writes them, Status
answers, resource versions, and the validation the real one applies to a Job's fields."""

from __future__ import annotations

import datetime
import re
from typing import Any

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
RV = [1000]


def now() -> str:
    """RFC 3339 with nanoseconds, trailing zeros dropped (Go's RFC3339Nano)."""
    t = datetime.datetime.now(datetime.timezone.utc)
    frac = f"{t.microsecond:06d}000".rstrip("0")
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


def now_s() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def next_rv() -> str:
    RV[0] += 1
    return str(RV[0])


def status(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details is not None:
        body["details"] = details
    return code, body


class Invalid(Exception):
    def __init__(self, field: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.field, self.reason, self.message = field, reason, message


def check_job(job: Any, ns: str) -> None:
    """What the API server's validation would refuse, for the fields the engine uses."""
    meta = job.get("metadata") or {}
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise Invalid("metadata.name", "FieldValueRequired", "name or generateName is required")
    if len(name) > 63 or not DNS_LABEL.match(name):
        raise Invalid(
            "metadata.name",
            "FieldValueInvalid",
            f'Invalid value: "{name}": a lowercase RFC 1123 label must consist of lower case '
            "alphanumeric characters or '-'",
        )
    for where, labels in (
        ("metadata.labels", meta.get("labels")),
        (
            "spec.template.metadata.labels",
            ((job.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels"),
        ),
    ):
        for k, v in (labels or {}).items():
            if not isinstance(v, str) or len(v) > 63 or not LABEL_VALUE.match(v):
                raise Invalid(
                    f"{where}.{k}",
                    "FieldValueInvalid",
                    f"Invalid value: {v!r}: a valid label must be 63 characters or less",
                )
    spec = job.get("spec") or {}
    for f in ("activeDeadlineSeconds", "backoffLimit"):
        if f in spec and (
            not isinstance(spec[f], int) or spec[f] < (1 if f == "activeDeadlineSeconds" else 0)
        ):
            raise Invalid(f"spec.{f}", "FieldValueInvalid", f"Invalid value: {spec[f]!r}")
    pod = (spec.get("template") or {}).get("spec") or {}
    if pod.get("restartPolicy") not in ("Never", "OnFailure"):
        raise Invalid(
            "spec.template.spec.restartPolicy",
            "FieldValueNotSupported",
            f'Unsupported value: "{pod.get("restartPolicy")}": '
            'supported values: "OnFailure", "Never"',
        )
    containers = pod.get("containers")
    if not isinstance(containers, list) or not containers:
        raise Invalid("spec.template.spec.containers", "FieldValueRequired", "Required value")
    for i, c in enumerate(containers):
        at = f"spec.template.spec.containers[{i}]"
        if not isinstance(c.get("name"), str) or not DNS_LABEL.match(c["name"]):
            raise Invalid(f"{at}.name", "FieldValueRequired", "Required value")
        if not isinstance(c.get("image"), str) or not c["image"].strip():
            raise Invalid(f"{at}.image", "FieldValueRequired", "Required value")
        for f in ("command", "args"):
            if f in c and (not isinstance(c[f], list) or not all(isinstance(a, str) for a in c[f])):
                raise Invalid(
                    f"{at}.{f}",
                    "FieldValueTypeInvalid",
                    "json: cannot unmarshal into Go struct field "
                    f"Container.{at}.{f} of type []string",
                )
        for j, e in enumerate(c.get("env") or []):
            if not isinstance(e.get("name"), str) or not ENV_NAME.match(e["name"]):
                raise Invalid(
                    f"{at}.env[{j}].name",
                    "FieldValueInvalid",
                    "a valid environment variable name must consist of alphabetic "
                    "characters, digits, '_', '-', or '.'",
                )
            if "value" in e and not isinstance(e["value"], str):
                raise Invalid(f"{at}.env[{j}].value", "FieldValueTypeInvalid", "must be a string")
        for k, q in ((c.get("resources") or {}).get("limits") or {}).items():
            if not (isinstance(q, (int, float)) or (isinstance(q, str) and QUANTITY.match(q))):
                raise Invalid(
                    f"{at}.resources.limits[{k}]",
                    "FieldValueInvalid",
                    f"quantities must match the regular expression: {q!r}",
                )

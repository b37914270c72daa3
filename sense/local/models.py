"""The shapes of the REST API's requests and answers (docs/rest-api.md), as pydantic models.

Example
-------
>>> LaunchRequest.model_validate({"startupCode": "print(1)", "size": "2"}).size
2
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sense.status import Status
from sense.variables import RESERVED, is_reserved

DEFAULT_ENGINE = "sense-ipython-engine"
Size = Literal["small", "medium", "large"] | Annotated[int, Field(ge=0, le=16)]
#: The largest id SQLite keeps: a dashboard id or ``master_id`` past it cannot name a dashboard.
MAX_ID = 2**63 - 1
Id = Annotated[int, Field(ge=1, le=MAX_ID)]

# Each startup field as the seed's clients, the 0.1.2 client and the short form spell it.
SPELLINGS = {
    "startup_script": ("startup_script", "startupScript", "script"),
    "startup_code": ("startup_code", "startupCode", "code"),
}
_ENV_ITEM = re.compile(r"env\[(.+)\]")

# What the validators below check, as JSON Schema, so that OpenAPI tells what is accepted.
_ENV_NAME = "^[^=\\x00]+$"
_ENV_VALUE = "^[^\\x00]*$"
_BOTH_STARTUP_FIELDS = {
    "required": ["startup_script", "startup_code"],
    "properties": {"startup_script": {"minLength": 1}, "startup_code": {"minLength": 1}},
}


class Error(BaseModel):
    """Every error answer."""

    error: str


class Project(BaseModel):
    """The project the server serves."""

    id: str
    owner_id: str
    name: str
    directory: str
    dashboards_url: str


class Dashboard(BaseModel):
    """One dashboard, as the README shows it."""

    id: int
    name: str
    project_id: str
    owner_id: str
    engine: str
    size: Size
    status: Status
    master_id: int | None
    startup_script: str
    startup_code: str
    env: dict[str, str]
    project_ip: str
    public_dns: str
    public_port_mapping: dict[str, int]
    exit_code: int | None
    created_at: str
    started_at: str | None
    stopped_at: str | None


class LaunchRequest(BaseModel):
    """The body of ``POST P/dashboards``. Startup fields may be spelled as in :data:`SPELLINGS`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"not": _BOTH_STARTUP_FIELDS})

    name: str = ""
    engine: str = Field(DEFAULT_ENGINE, min_length=1)
    size: Size = "small"
    startup_script: str = Field(
        "",
        description="A Python file in the project folder, as a path relative to it; a launch "
        "naming anything else is a 422.",
    )
    startup_code: str = ""
    env: dict[str, str] = Field(
        default_factory=dict,
        json_schema_extra={
            "propertyNames": {
                "pattern": _ENV_NAME,
                "not": {"pattern": f"^(?:{RESERVED.pattern})$"},
            },
            "additionalProperties": {"type": "string", "pattern": _ENV_VALUE},
        },
    )
    master_id: Id | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_spelling(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for field, spellings in SPELLINGS.items():
            given = [name for name in spellings if data.get(name)]
            if len(given) > 1:
                raise ValueError(f"{' and '.join(given)} are the same field: give one of them")
            for name in spellings:
                value = data.pop(name, None)
                if name in given:
                    data[field] = value
        if data.get("startup_script") and data.get("startup_code"):
            raise ValueError("startup_script and startup_code are mutually exclusive: give one")
        return data

    @field_validator("size", mode="before")
    @classmethod
    def _known_size(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        elif isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON Schema's integers include 2.0
        names = ("small", "medium", "large")
        if value in names or (type(value) is int and 0 <= value <= 16):
            return value
        raise ValueError(f"size should be one of {', '.join(names)} or an int from 0 to 16")

    @field_validator("master_id", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("env", mode="before")
    @classmethod
    def _env_from_form(cls, value: Any) -> Any:
        # A form carries the mapping as JSON text.
        if isinstance(value, str):
            try:
                return json.loads(value) if value.strip() else {}
            except ValueError:
                raise ValueError("env should be a JSON object of strings") from None
        return value

    @field_validator("env")
    @classmethod
    def _no_context_variables(cls, env: dict[str, str]) -> dict[str, str]:
        # What execve refuses: a name that is empty or holds "=", a NUL byte anywhere.
        bad = sorted(repr(name) for name, value in env.items() if _not_for_execve(name, value))
        if bad:
            raise ValueError(
                f"{', '.join(bad)}: an environment variable's name should be non-empty and "
                "without '=', and neither name nor value may hold a NUL character"
            )
        reserved = sorted(name for name in env if is_reserved(name))
        if reserved:
            raise ValueError(
                f"{', '.join(reserved)}: the dashboard context sets these, env may not "
                "override them"
            )
        return env

    @classmethod
    def from_form(cls, items: list[tuple[str, str]]) -> dict:
        """A form's fields as the dict this model reads; ``env[NAME]=value`` fields fill ``env``."""
        data: dict[str, Any] = {}
        env: dict[str, str] = {}
        for key, value in items:
            match = _ENV_ITEM.fullmatch(key)
            if match:
                env[match.group(1)] = value
            else:
                data[key] = value
        if env:
            if "env" in data:
                raise ValueError("env is given twice: as JSON and as env[NAME] fields")
            data["env"] = env
        return data


def _not_for_execve(name: str, value: str) -> bool:
    """Whether ``name=value`` cannot be an environment variable of a process."""
    return not name or "=" in name or "\0" in name or "\0" in value


#: A form-encoded launch (as the 2013 clients sent), as JSON Schema: the fields of
#: :class:`LaunchRequest` as text.
LAUNCH_FORM = {
    "type": "object",
    "description": "The fields of a JSON launch, as text. Also accepted: env as JSON text or "
    "as env[NAME] fields, and the other spellings of the startup fields.",
    "properties": {
        "name": {"type": "string"},
        "engine": {"type": "string", "minLength": 1},
        "size": {"type": "string", "pattern": "^(small|medium|large|1[0-6]|[0-9])$"},
        "startup_script": {"type": "string"},
        "startup_code": {"type": "string"},
        "master_id": {"type": "string", "pattern": "^([1-9][0-9]{0,17})?$"},
    },
    "additionalProperties": False,
    "not": _BOTH_STARTUP_FIELDS,
}


class StopRequest(BaseModel):
    """The body of ``PATCH P/dashboards/{id}``."""

    model_config = ConfigDict(extra="ignore")

    status: Literal[Status.STOPPED]

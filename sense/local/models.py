"""The shapes of the REST API's requests and answers (SPEC §2 and §3), as pydantic models.

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

from sense.local.context import is_reserved

DEFAULT_ENGINE = "sense-ipython-engine"
Status = Literal["starting", "running", "stopped", "failed"]
Size = Literal["small", "medium", "large"] | Annotated[int, Field(ge=0, le=16)]

# Each startup field as the seed's clients, the 0.1.2 client and the short form spell it.
SPELLINGS = {
    "startup_script": ("startup_script", "startupScript", "script"),
    "startup_code": ("startup_code", "startupCode", "code"),
}
_ENV_ITEM = re.compile(r"env\[(.+)\]")


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
    """One dashboard (SPEC §3)."""

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

    model_config = ConfigDict(extra="forbid")

    name: str = ""
    engine: str = DEFAULT_ENGINE
    size: Size = "small"
    startup_script: str = ""
    startup_code: str = ""
    env: dict[str, str] = Field(default_factory=dict)
    master_id: int | None = None

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

    @field_validator("engine")
    @classmethod
    def _python_engine(cls, engine: str) -> str:
        # The local backend runs every job with Python; an R or JavaScript engine cannot run.
        if "python" not in engine.lower():
            raise ValueError(
                f"engine {engine!r} is not available locally: the local server runs Python "
                f"engines only, such as {DEFAULT_ENGINE!r}"
            )
        return engine

    @field_validator("size", mode="before")
    @classmethod
    def _known_size(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
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


class StopRequest(BaseModel):
    """The body of ``PATCH P/dashboards/{id}``."""

    model_config = ConfigDict(extra="ignore")

    status: Literal["stopped"]

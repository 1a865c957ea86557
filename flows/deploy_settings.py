"""How a campaign is deployed (``alflow deploy``, ``deploy/serve.py``): the settings of
its ``[deploy]`` table, overridden by ``ALFLOW_DEPLOY_*`` environment variables and
command-line options. Imports no Prefect."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flows.config import ConfigError


class DeploySettings(BaseSettings):
    """How a campaign is deployed. Sources, lowest first: defaults, the campaign TOML's
    ``[deploy]`` table, ``ALFLOW_DEPLOY_*`` environment variables, command-line options."""

    model_config = SettingsConfigDict(env_prefix="ALFLOW_DEPLOY_", extra="forbid")

    #: cron schedule of ``al-cycle`` (None: no schedule, run it by hand)
    cron: str | None = None
    timezone: str = "UTC"
    #: generations each scheduled ``al-cycle`` run adds
    generations_per_cycle: int = Field(1, ge=1)
    #: N: ``retrain`` trains once the committee has not seen at least this many labels
    retrain_min_new_labels: int = Field(8, ge=0)
    #: how many ``alflow.labels.added`` events start a ``retrain`` run (Prefect's threshold)
    retrain_trigger_events: int = Field(1, ge=1)
    #: the window (s) in which those events must arrive; needed when more than one
    retrain_within_s: float = Field(0.0, ge=0)
    #: no event trigger on ``retrain`` (manual and scheduled runs only)
    retrain_trigger: bool = True

    @model_validator(mode="after")
    def _window_for_several_events(self) -> DeploySettings:
        if self.retrain_trigger_events > 1 and self.retrain_within_s <= 0:
            raise ValueError("retrain_trigger_events > 1 needs retrain_within_s > 0 (the window)")
        return self


def deploy_settings(config_path: str | Path, **overrides: Any) -> DeploySettings:
    """The deployment settings of a campaign; ``overrides`` that are None are ignored.

    Raises ``ConfigError`` (with ``deploy.<key>`` paths) for unknown or invalid settings."""
    with open(config_path, "rb") as stream:
        table = dict(tomllib.load(stream).get("deploy") or {})
    prefix = DeploySettings.model_config["env_prefix"]
    from_env = {name: os.environ[variable] for name in DeploySettings.model_fields
                if (variable := f"{prefix}{name}".upper()) in os.environ}
    try:
        return DeploySettings(**{**table, **from_env, **{k: v for k, v in overrides.items() if v is not None}})
    except ValidationError as exc:
        raise ConfigError(config_path, [(".".join(["deploy", *map(str, error["loc"])]), error["msg"])
                                        for error in exc.errors()]) from None

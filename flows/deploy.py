"""``xattr deploy``: check ``prefect.yaml``, create the work pool if missing, deploy to a server.

Everything that can be checked before talking to Prefect is checked here, so that each
mistake is one clear line: a missing entrypoint file, a config parameter naming a file that is
not there, a config that the flow would refuse (invalid, or naming data or model paths that do
not exist: each config is read with its flow's loader), a cron string or timezone Prefect
would reject, a server that does not answer.
The deployment itself is Prefect's own ``prefect deploy`` (run as a subprocess in the project
directory), so what is deployed is exactly what ``prefect deploy`` would deploy by hand.
"""

from __future__ import annotations

import fnmatch
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from flows.config_files import installed_command, read_config

DEFAULT_API_URL = "http://127.0.0.1:4200/api"

#: The settings loader of each ``*_from_config`` entrypoint: ``xattr deploy`` reads the
#: deployment's config with it and checks its data and model paths, as a run would.
CONFIG_LOADERS = {
    "explain_corpus_from_config": "flows.settings:load_settings",
    "price_drivers_from_config": "flows.price_settings:load_price_settings",
    "benchmark_from_config": "flows.benchmark_settings:load_benchmark_settings",
    "train_from_config": "flows.train_settings:load_train_settings",
}


def check_config(name: str, function: str, config: Path) -> None:
    """Load ``config`` as the entrypoint ``function`` will and check that its data and model paths exist.

    Raises:
        DeployError: ``deployment NAME: <the config's one-line error>``.
    """
    import importlib

    from flows.config_files import SettingsError

    target = CONFIG_LOADERS.get(function)
    if target is None:
        return
    module, _, attribute = target.partition(":")
    loader = getattr(importlib.import_module(module), attribute)
    try:
        loader(config).check_inputs(config)
    except SettingsError as exc:
        raise DeployError(f"deployment {name!r}: {exc}") from exc


class DeployError(RuntimeError):
    """A deployment cannot be made; the message says which deployment, field or server."""


@dataclass(frozen=True)
class DeploymentPlan:
    """One deployment of ``prefect.yaml`` after its checks passed.

    Attributes:
        name: The deployment's name.
        entrypoint: ``path/to/file.py:flow_function``, relative to the project directory.
        config: The ``config`` parameter (a path relative to the project directory), if any.
        work_pool: The work pool's name.
        crons: ``(cron, timezone)`` of each schedule.
    """

    name: str
    entrypoint: str
    config: str | None
    work_pool: str
    crons: tuple[tuple[str, str], ...]


def _validate_schedule(name: str, schedule: Any) -> tuple[str, str]:
    from prefect.client.schemas.schedules import CronSchedule

    if not isinstance(schedule, dict) or "cron" not in schedule:
        raise DeployError(f"deployment {name!r}: each schedule needs a cron string, got {schedule!r}")
    cron, timezone = str(schedule["cron"]), str(schedule.get("timezone") or "UTC")
    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise DeployError(f"deployment {name!r}: schedule rejected: {reason}") from exc
    return cron, timezone


def read_plan(prefect_file: Path, names: list[str] | None = None) -> list[DeploymentPlan]:
    """Read and check the deployments of a ``prefect.yaml``.

    Paths (entrypoints and the ``config`` parameter) are relative to the file's directory, the
    directory the deployments' pull step makes the working directory.

    Args:
        prefect_file: The ``prefect.yaml``.
        names: Deployment names or glob patterns to keep; all when ``None``.

    Returns:
        The selected deployments, in file order.

    Raises:
        DeployError: A missing or malformed file, a name that matches nothing, an entrypoint
            file or config file that does not exist, a config that is invalid or names data or
            model paths that do not exist, a missing work pool, or a bad schedule.
    """
    _, raw = read_config(prefect_file, what="deployment file", error=DeployError)
    deployments = raw.get("deployments")
    if not isinstance(deployments, list) or not deployments:
        raise DeployError(f"deployment file {str(prefect_file)!r} declares no deployments")
    for position, item in enumerate(deployments):
        if not isinstance(item, dict):
            raise DeployError(f"deployment file {str(prefect_file)!r}: deployment {position} is not a mapping")
    root = prefect_file.resolve().parent
    all_names = [str(d.get("name")) for d in deployments]
    for pattern in names or []:
        if not fnmatch.filter(all_names, pattern):
            raise DeployError(f"no deployment named {pattern!r} in {prefect_file}; declared: {', '.join(all_names)}")
    plans: list[DeploymentPlan] = []
    for item in deployments:
        name = str(item.get("name"))
        if names and not any(fnmatch.fnmatch(name, p) for p in names):
            continue
        entrypoint = str(item.get("entrypoint") or "")
        path, _, function = entrypoint.partition(":")
        if not path or not function:
            raise DeployError(f"deployment {name!r}: entrypoint {entrypoint!r} must be 'path/to/file.py:flow_function'")
        if not (root / path).is_file():
            raise DeployError(f"deployment {name!r}: entrypoint file {path!r} does not exist in {root}")
        parameters = item.get("parameters") or {}
        config = parameters.get("config")
        if config is not None:
            target = Path(os.path.expandvars(str(config))).expanduser()
            target = target if target.is_absolute() else root / target
            if not target.is_file():
                raise DeployError(
                    f"deployment {name!r}: parameter config {str(config)!r} names a file that does not exist"
                    f" ({target}; relative paths are taken from {root})"
                )
            check_config(name, function, target)
        pool = (item.get("work_pool") or {}).get("name")
        if not pool:
            raise DeployError(f"deployment {name!r}: work_pool.name is missing")
        crons = tuple(_validate_schedule(name, s) for s in item.get("schedules") or [])
        plans.append(DeploymentPlan(name, entrypoint, None if config is None else str(config), str(pool), crons))
    return plans


def resolve_api_url(api_url: str | None) -> str:
    """The Prefect API URL: the argument, else ``PREFECT_API_URL``, else the local default server."""
    if api_url:
        return api_url.rstrip("/")
    from prefect.settings import PREFECT_API_URL

    return (PREFECT_API_URL.value() or DEFAULT_API_URL).rstrip("/")


def check_server(api_url: str, timeout: float = 5.0) -> None:
    """Raise :class:`DeployError` unless a Prefect server answers ``GET <api_url>/health``."""
    hint = "start one with `prefect server start --host 127.0.0.1` and set PREFECT_API_URL (or --api-url)"
    try:
        response = httpx.get(f"{api_url}/health", timeout=timeout)
    except httpx.HTTPError as exc:
        raise DeployError(f"no Prefect server answers at {api_url} ({type(exc).__name__}); {hint}") from exc
    if response.status_code != 200:
        raise DeployError(f"Prefect server at {api_url} is not healthy (HTTP {response.status_code}); {hint}")


def ensure_work_pool(api_url: str, name: str, pool_type: str = "process") -> bool:
    """Create the work pool unless it exists; return whether it was created.

    Raises:
        DeployError: The pool exists with another type.
    """
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with SyncPrefectClient(api_url) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type=pool_type))
            return True
    if pool.type != pool_type:
        raise DeployError(f"work pool {name!r} exists with type {pool.type!r}, but the deployments need {pool_type!r}")
    return False


def deploy(
    prefect_file: Path, names: list[str] | None = None, api_url: str | None = None, *, timeout: float = 300.0
) -> tuple[list[DeploymentPlan], list[str]]:
    """Check the file, check the server, create missing work pools and run ``prefect deploy``.

    ``XATTR_HOME`` (used by the pull step) defaults to the project directory.

    Args:
        prefect_file: The ``prefect.yaml``.
        names: Deployments to deploy (names or glob patterns); all when ``None``.
        api_url: The server's API URL; ``PREFECT_API_URL`` or the local default when ``None``.
        timeout: Seconds ``prefect deploy`` may take.

    Returns:
        The deployed plans and the work pools created.

    Raises:
        DeployError: Any check failed, or ``prefect deploy`` failed (its last error line is quoted).
    """
    plans = read_plan(prefect_file, names)
    url = resolve_api_url(api_url)
    check_server(url)
    created = [pool for pool in dict.fromkeys(p.work_pool for p in plans) if ensure_work_pool(url, pool)]
    root = prefect_file.resolve().parent
    # A wide terminal keeps rich from wrapping the "... successfully created" lines we look for.
    env = {**os.environ, "PREFECT_API_URL": url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "COLUMNS": "400"}
    env.setdefault("XATTR_HOME", str(root))
    command = [
        installed_command("prefect", DeployError),
        "--no-prompt",
        "deploy",
        "--prefect-file",
        str(prefect_file.resolve()),
    ]
    for plan in plans:
        command += ["--name", plan.name]
    try:
        done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise DeployError(f"`prefect deploy` did not finish within {timeout:.0f} s") from exc
    output = (done.stdout or "") + (done.stderr or "")
    failed = [plan.name for plan in plans if f"/{plan.name}' successfully" not in " ".join(output.split())]
    if done.returncode != 0 or failed:
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        last = next((line for line in reversed(lines) if "error" in line.lower()), lines[-1] if lines else "")
        raise DeployError(f"`prefect deploy` failed for {', '.join(failed) or 'the deployments'}: {last}")
    return plans, created

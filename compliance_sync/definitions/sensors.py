"""Knowing it works, and following the data: a run-failure alert posted to a webhook, and a sensor that
requests a run for a fiscal year whose sources changed (beside the daily schedule). Both read the settings
and the backend from the ``compliance_sync`` resource at each tick; only their status and interval are set
when the code location loads."""

from __future__ import annotations

import json
import logging

import dagster as dg
import httpx
import tenacity

from compliance_sync.config.secrets import redact
from compliance_sync.config.settings import Settings
from compliance_sync.definitions.resources import SyncResource
from compliance_sync.definitions.schedules import run_request, scheduled_years
from compliance_sync.definitions.tags import PARTITION_TAG
from compliance_sync.domain.fiscal import FiscalYear

log = logging.getLogger(__name__)

ALERT_SENSOR = "compliance_sync_failure_alert"
CHANGE_SENSOR = "compliance_sync_on_change"
FIRST_LOOK = (
    "first look: fingerprints recorded as the baseline; "
    "the next change to a watched fiscal year's sources requests a run"
)
ALERT_TIMEOUT_S = 10.0


def alert_message(
    job: str, fiscal_year: str | None, error: str, run_id: str, dagster_url: str | None
) -> dict[str, str | None]:
    """The short JSON an alert posts: job, FY, error, a link to the run (never a secret)."""
    what = "an asset run (materialize / backfill / checks)" if job.startswith("__ASSET_JOB") else job
    return {
        "text": redact(f"compliance_sync: {what} failed for FY{fiscal_year or '?'}: {error}")[:1000],
        "job": job,
        "fiscal_year": fiscal_year,
        "error": redact(error)[:1000],
        "run_id": run_id,
        "run_url": f"{dagster_url}/runs/{run_id}" if dagster_url else None,
    }


@tenacity.retry(
    retry=tenacity.retry_if_exception_type(httpx.TransportError),
    stop=tenacity.stop_after_attempt(3),
    wait=tenacity.wait_exponential(multiplier=0.5, max=4),
    reraise=True,
)
def post_alert(webhook: str, message: dict) -> int:
    """POST the alert; returns the HTTP status. The webhook URL is a secret: never logged."""
    response = httpx.post(
        webhook, content=json.dumps(message), headers={"Content-Type": "application/json"}, timeout=ALERT_TIMEOUT_S
    )
    return response.status_code


def failure_text(context: dg.RunFailureSensorContext) -> str:
    """What went wrong, in one line: the step's ``dg.Failure`` description (what the sync said), else the
    first line of the exception the step raised, else the run failure's own message (e.g. a run that never
    started)."""
    for event in context.get_step_failure_events():
        data = event.step_failure_data
        if data is None:
            continue
        if data.user_failure_data is not None and data.user_failure_data.description:
            return data.user_failure_data.description.strip()
        error = data.error
        if error is not None and error.cause is not None:
            error = error.cause  # Dagster wraps the exception the step raised; it is the cause
        if error is not None and error.message.strip():
            return error.message.strip().splitlines()[0]
    return (context.failure_event.message or "the run failed").strip()


def build_failure_alert(settings: Settings) -> dg.RunStatusSensorDefinition:
    """Every job of this code location is monitored (``monitored_jobs`` left unset): runs launched from an
    asset's "Materialize…" and asset backfills run as the hidden ``__ASSET_JOB``, not as a named job."""

    @dg.run_failure_sensor(
        name=ALERT_SENSOR,
        default_status=dg.DefaultSensorStatus.RUNNING if settings.alert_webhook else dg.DefaultSensorStatus.STOPPED,
        description=(
            "Posts a short JSON message (job, fiscal year, error, link to the run) "
            "to COMPLIANCE_SYNC_ALERT_WEBHOOK when a run of this code location fails."
        ),
    )
    def compliance_sync_failure_alert(context: dg.RunFailureSensorContext, compliance_sync: SyncResource):
        now = compliance_sync.settings()
        if not now.alert_webhook:
            return dg.SkipReason("COMPLIANCE_SYNC_ALERT_WEBHOOK is not set")
        run = context.dagster_run
        message = alert_message(
            run.job_name, run.tags.get(PARTITION_TAG), failure_text(context), run.run_id, now.dagster_url
        )
        try:
            status = post_alert(now.alert_webhook.get_secret_value(), message)
        except httpx.HTTPError as exc:
            context.log.warning(
                f"could not post the failure alert of run {run.run_id} to the webhook: {type(exc).__name__}"
            )
            return None
        if status >= 300:
            context.log.warning(f"the alert webhook answered HTTP {status} for run {run.run_id}")
        return None

    return compliance_sync_failure_alert


def build_change_sensor(
    settings: Settings, job: dg.UnresolvedAssetJobDefinition, partition_keys: list[str]
) -> dg.SensorDefinition:
    @dg.sensor(
        name=CHANGE_SENSOR,
        job=job,
        minimum_interval_seconds=settings.change_sensor_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING if settings.change_sensor else dg.DefaultSensorStatus.STOPPED,
        description="Requests a run for a fiscal year the schedule covers when its source rows changed "
        "(a fingerprint of the FY's rows; run key per FY, fingerprint and date).",
    )
    def compliance_sync_on_change(context: dg.SensorEvaluationContext, compliance_sync: SyncResource):
        now_settings = compliance_sync.settings()
        today = now_settings.today()
        seen = json.loads(context.cursor) if context.cursor else {}
        backend = compliance_sync.backend(now_settings)
        requests, now = [], {}
        for key in scheduled_years(today, now_settings, partition_keys):
            fingerprint = backend.fingerprint(FiscalYear(int(key), now_settings.fy_start_month))
            now[key] = fingerprint
            if key in seen and seen[key] != fingerprint:
                run_key = f"fy{key}-{fingerprint}-{today.isoformat()}"
                requests.append(run_request(key, today, "change", run_key, now_settings.fy_start_month))
        context.update_cursor(json.dumps(now, sort_keys=True))
        return requests or dg.SkipReason("no source of the watched fiscal years changed" if seen else FIRST_LOOK)

    return compliance_sync_on_change

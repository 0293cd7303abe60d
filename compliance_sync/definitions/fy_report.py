"""The ``compliance_report`` asset: one self-contained HTML page per fiscal year, for people who do not open
Dagster (SPEC §7 "Report"), written to ``COMPLIANCE_SYNC_REPORT_DIR``.

Downstream of the four targets (``deps``), with the same FY partitions, and materialised by an eager
automation condition after each successful live sync of its FY: a live sync materialises the four targets,
a dry run only observes them, and eager reacts to materialisations, so dry runs and checks runs never
trigger it. Eager waits while any of the four is in progress and starts one run per FY once the sync's run
has recorded them. The report's own sensor, ``compliance_report_automation``, runs by default, so
``dagster dev`` (``compliance-sync ui``, ``demo --ui``) needs no toggle; switch it off in the UI's Automation
tab to stop the reports. The report reads the same ``as_of`` as the sync it follows, so its figures are the
rows that sync wrote. Its step is read-only on the database: a dry run, no ledger row.
"""

import dagster as dg

from compliance_sync.definitions.resources import SyncResource
from compliance_sync.domain.fiscal import FiscalYear
from compliance_sync.domain.tables import APAC, TARGETS
from compliance_sync.errors import SettingsError, SyncError

REPORT_ASSET = "compliance_report"
REPORT_SENSOR = "compliance_report_automation"


class ReportConfig(dg.Config):
    as_of: str | None = None  # YYYY-MM-DD; default: the as_of of the FY's last sync, else today


def _synced_as_of(context: dg.AssetExecutionContext, key: str) -> str | None:
    """The ``as_of`` the FY's latest materialisation of the APAC target recorded (the sync this report follows)."""
    found = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(APAC), asset_partitions=[key]), limit=1, ascending=False
    )
    for record in found.records:
        mat = record.asset_materialization
        value = mat.metadata.get("as_of") if mat is not None else None
        if value is not None:
            return str(value.value)
    return None


def build_report_asset(partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name=REPORT_ASSET,
        deps=[t.name for t in TARGETS],
        partitions_def=partitions_def,
        automation_condition=dg.AutomationCondition.eager(),
        group_name="reports",
        kinds={"html"},
        description="One self-contained HTML page per fiscal year: APAC and its change since the previous run, "
        "business units, territories, statuses, the clients below compliance and what they miss, the pace per month, "
        "the run's warnings. Written to COMPLIANCE_SYNC_REPORT_DIR after each live sync of the FY; read-only on the "
        "database.",
    )
    def compliance_report(
        context: dg.AssetExecutionContext, config: ReportConfig, compliance_sync: SyncResource
    ) -> dg.MaterializeResult:
        from compliance_sync.service.fy_report import service
        from compliance_sync.service.sync import parse_as_of

        try:
            if not context.has_partition_key:
                raise SettingsError(
                    "the report runs one fiscal year at a time: choose a fiscal-year partition (e.g. 2025)"
                )
            key = context.partition_key
            sync = compliance_sync
            settings = sync.settings()
            fy = FiscalYear(int(key), settings.fy_start_month)
            as_of = (
                parse_as_of(config.as_of, "run config as_of")
                or parse_as_of(_synced_as_of(context, key), "the sync's as_of")
                or settings.today()
            )
            backend = sync.backend(settings)
            context.log.info(
                f"report {fy.describe()} as_of {fy.as_of(as_of)}, backend {backend.name.value} at "
                f"{backend.describe()} (read-only)"
            )
            made = service.produce(settings, backend, fy, as_of, trigger="report")
            out = service.report_dir(settings) / service.default_name(fy)
            path = service.write(settings, made.tables, out, name="COMPLIANCE_SYNC_REPORT_DIR")
        except SyncError as exc:
            context.log.error(str(exc))
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        for w in made.warnings:
            context.log.warning(w)
        meta = {
            "path": dg.MetadataValue.path(str(path)),
            "summary": dg.MetadataValue.md(service.markdown_summary(made.tables)),
            "as_of": dg.MetadataValue.text(made.tables.as_of.isoformat()),
        }
        if made.tables.apac is not None:
            meta["actual_compliance"] = float(made.tables.apac)
        return dg.MaterializeResult(metadata=meta)

    return compliance_report


def build_report_sensor(report: dg.AssetsDefinition) -> dg.AutomationConditionSensorDefinition:
    """Evaluates the report's eager condition (running by default, so ``dagster dev`` needs no toggle)."""
    return dg.AutomationConditionSensorDefinition(
        REPORT_SENSOR,
        target=dg.AssetSelection.assets(report),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Materialises compliance_report for a fiscal year after each successful live sync of it.",
    )

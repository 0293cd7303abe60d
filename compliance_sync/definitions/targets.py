"""The four planning targets as one multi-asset: its single step runs
:func:`compliance_sync.service.sync.run_fiscal_year` for the partition's fiscal year and translates the outcome
into Dagster events.

A live run writes the four targets together whatever is selected; a run is dry when its config, its selection
(checks only) or its tag says so. The rules for selection and mode: docs/architecture.md, "Definitions"."""

import datetime as dt
from collections.abc import Iterator
from typing import Any

import dagster as dg

from compliance_sync.definitions import checks, metadata, sources
from compliance_sync.definitions.resources import SyncResource
from compliance_sync.definitions.tags import DRY_RUN, MODE_TAG, OP_NAME
from compliance_sync.domain.fiscal import FiscalYear
from compliance_sync.domain.tables import APAC, BUSINESS_UNIT, REQUIREMENTS, SOURCES, TARGETS, TERRITORY
from compliance_sync.errors import SettingsError, SyncError
from compliance_sync.service.outcome import Mode, Outcome
from compliance_sync.service.summary import summary
from compliance_sync.service.sync import RunOptions, parse_as_of, run_fiscal_year

DEPENDENCIES = {
    REQUIREMENTS: [s.name for s in SOURCES if s.name != "territory_strategies"],
    TERRITORY: [REQUIREMENTS, "territory_strategies"],
    BUSINESS_UNIT: [TERRITORY],
    APAC: [BUSINESS_UNIT],
}
STEP_DESCRIPTION = (
    "Computes one fiscal year of compliance from the segmentation tables and reports its checks. Writes the four "
    "planning tables only in a live run (compliance_sync_job, or Materialize on a target); in "
    "compliance_sync_dry_run_job, compliance_checks_job and any run tagged compliance_sync/mode: dry_run it "
    "reads only and writes nothing."
)


class SyncConfig(dg.Config):
    """``dry_run`` unset: the job decides (compliance_sync_job writes; the dry-run and checks jobs never do)."""

    dry_run: bool | None = None
    as_of: str | None = None
    allow_mass_prune: bool = False
    diff_limit: int = 50


def sync_run_config(
    as_of: dt.date | None = None,
    dry_run: bool | None = None,
    allow_mass_prune: bool = False,
    diff_limit: int = 50,
    loggers: dict[str, Any] | None = None,
) -> dg.RunConfig:
    """The run config of one FY's run, at ``ops.compliance_sync.config``."""
    config = SyncConfig(
        dry_run=dry_run,
        as_of=as_of.isoformat() if as_of else None,
        allow_mass_prune=allow_mass_prune,
        diff_limit=diff_limit,
    )
    return dg.RunConfig(ops={OP_NAME: config}, loggers=loggers)


def target_specs(partitions_def: dg.PartitionsDefinition, freshness_hours: float) -> list[dg.AssetSpec]:
    freshness = dg.FreshnessPolicy.time_window(fail_window=dt.timedelta(hours=freshness_hours))
    return [
        dg.AssetSpec(
            key=t.name,
            deps=DEPENDENCIES[t.name],
            description=f"{t.description} Key: ({', '.join(t.key)}). Columns the job owns: "
            f"{', '.join(t.owned)}, updated_at; every other column is never written.",
            group_name="planning",
            partitions_def=partitions_def,
            skippable=True,
            kinds={"postgres"},
            freshness_policy=freshness,
            metadata={"dagster/column_schema": dg.MetadataValue.table_schema(metadata.column_schema(t.name))},
        )
        for t in TARGETS
    ]


def build_targets_asset(partitions_def: dg.PartitionsDefinition, freshness_hours: float) -> dg.AssetsDefinition:
    @dg.multi_asset(
        name=OP_NAME,
        specs=target_specs(partitions_def, freshness_hours),
        check_specs=checks.check_specs(partitions_def),
        can_subset=True,
        description=STEP_DESCRIPTION,
    )
    def compliance_sync_targets(
        context: dg.AssetExecutionContext, config: SyncConfig, compliance_sync: SyncResource
    ) -> Iterator[Any]:
        yield from run_step(context, config, compliance_sync)

    return compliance_sync_targets


def _fail(message: str, outcome: Outcome | None = None) -> dg.Failure:
    meta = {metadata.SUMMARY: dg.MetadataValue.json(summary(outcome))} if outcome else {}
    return dg.Failure(description=message, metadata=meta, allow_retries=False)


NO_PARTITION = (
    "this run has no fiscal-year partition: the sync and its checks run one fiscal year at a time. Choose one "
    '(e.g. 2025): "Materialize…" on a target and pick a partition, or launch compliance_checks_job / '
    "compliance_sync_job from the launchpad with a partition selected"
)
PARTITION_RANGE = (
    "this run targets the fiscal-year range {start}…{end}: the sync runs one fiscal year at a time. Launch a "
    "backfill of those partitions instead (one run per fiscal year)"
)


def _partition_key(context: dg.AssetExecutionContext) -> str:
    if context.has_partition_key:
        return context.partition_key
    if context.has_partition_key_range:
        keys = context.partition_key_range
        if keys.start == keys.end:
            return keys.start
        raise SettingsError(PARTITION_RANGE.format(start=keys.start, end=keys.end))
    raise SettingsError(NO_PARTITION)


def run_mode(context: dg.AssetExecutionContext, config: SyncConfig) -> Mode:
    """Dry when the config says so, when only checks are selected, or when the run is tagged dry_run."""
    dry = bool(config.dry_run) or not context.selected_asset_keys or context.run.tags.get(MODE_TAG) == DRY_RUN
    return Mode.DRY_RUN if dry else Mode.LIVE


def _prepare(context: dg.AssetExecutionContext, config: SyncConfig, mode: Mode, sync: SyncResource) -> tuple:
    key = _partition_key(context)
    settings = sync.settings()
    fy = FiscalYear(int(key), settings.fy_start_month)
    as_of = fy.as_of(parse_as_of(config.as_of, "run config as_of") or settings.today())
    backend, bu_map = sync.backend(settings), settings.bu_map()
    context.log.info(
        f"{fy.describe()} as_of {as_of}, {mode.value.replace('_', ' ')}, "
        f"backend {backend.name.value} at {backend.describe()}"
    )
    return backend, settings, bu_map, Outcome(fy, as_of, mode, backend.name.value, context.run.run_id)


def run_step(context: dg.AssetExecutionContext, config: SyncConfig, sync: SyncResource) -> Iterator[Any]:
    selected = {k.to_user_string() for k in context.selected_asset_keys}
    mode = run_mode(context, config)
    try:
        backend, settings, bu_map, outcome = _prepare(context, config, mode, sync)
    except SyncError as exc:  # settings and the like: before any outcome exists
        context.log.error(str(exc))
        raise _fail(str(exc)) from None
    options = RunOptions(mode, config.allow_mass_prune, config.diff_limit, context.run.run_id)
    try:
        run_fiscal_year(backend, settings, bu_map, outcome, options)
    except (KeyboardInterrupt, SystemExit):  # say what was written before the run ends
        meta = {metadata.SUMMARY: dg.MetadataValue.json(summary(outcome))}
        context.log_event(dg.AssetObservation(asset_key=APAC, partition=outcome.fy.key, metadata=meta))
        context.log.error(outcome.error)
        raise
    for w in outcome.backend_warnings:
        context.log.warning(w)
    for obs in sources.observations(outcome.source_counts, outcome.fy.key, outcome.as_of.isoformat()):
        context.log_event(obs)
    selected_checks = {(k.asset_key.to_user_string(), k.name) for k in context.selected_asset_check_keys}
    results = checks.check_results(outcome, selected_checks)
    for (target, code), r in results.items():
        if not r.passed:
            (context.log.error if r.severity == dg.AssetCheckSeverity.ERROR else context.log.warning)(
                f"{target} check {code}: {r.metadata['total'].value}"
            )
    if outcome.error:
        context.log.error(outcome.error)
        yield from results.values()
        raise _fail(outcome.error, outcome)
    if mode == Mode.DRY_RUN:
        if selected:
            for t in TARGETS:
                context.log_event(
                    dg.AssetObservation(
                        asset_key=t.name,
                        partition=outcome.fy.key,
                        metadata=metadata.for_target(t.name, outcome, with_summary=t.name == APAC),
                    )
                )
        yield from results.values()
        return
    context.log.info("written: " + "; ".join(f"{n} {t.counts()}" for n, t in outcome.diff.targets.items()))
    for t in TARGETS:
        meta = metadata.for_target(t.name, outcome, with_summary=t.name == APAC)
        if t.name in selected:
            yield dg.MaterializeResult(
                asset_key=t.name,
                metadata=meta,
                check_results=[r for (target, _), r in results.items() if target == t.name],
            )
        else:  # written in the same transaction: recorded as materialised whatever was selected
            context.log_event(dg.AssetMaterialization(asset_key=t.name, partition=outcome.fy.key, metadata=meta))

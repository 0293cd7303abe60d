-- compliance_sync: the minimal migration for an existing (Supabase) database, SPEC §3.3 / §3.4.
--
-- Applied by `compliance-sync migrate --minimal` (apply_minimal in backends/postgres/migrate.py), which first,
-- in Python and in the same transaction, makes sure each of the four target keys is backed by a unique
-- index (matched by its columns, whatever its name): it lists duplicate keys and stops, or with
-- `--dedupe` keeps the row with the latest updated_at, then creates the missing ones as
--   CREATE UNIQUE INDEX IF NOT EXISTS <table>_compliance_sync_key ON public.<table> (<key columns>);
-- with the keys
--   account_plan_event_requirements (plan_id, event_type_id, fiscal_year)
--   territory_compliance_summary    (territory_strategy_id, fiscal_year)
--   business_unit_planning          (bu_name, fiscal_year)
--   apac_planning_goals             (fiscal_year)
-- This file then adds the run ledger and asks PostgREST to reload its schema cache. Nothing else on
-- the database is created, altered or dropped. Every statement is idempotent.

-- 3.4 The run ledger (job-owned). The full migration runs this file too.
CREATE TABLE IF NOT EXISTS public.compliance_sync_runs (
    id                 bigserial PRIMARY KEY,
    run_id             text,                -- the Dagster run id: links "last synced" to the run
    fiscal_year        integer NOT NULL,
    as_of              date,
    started_at         timestamptz NOT NULL,
    finished_at        timestamptz,
    backend            text,                -- 'postgres' or 'rest'
    mode               text,                -- 'live' or 'dry_run'
    status             text,                -- 'succeeded' or 'failed'
    clients_processed  integer,
    clients_skipped    integer,
    rows_inserted      integer,
    rows_updated       integer,
    rows_deleted       integer,
    rows_unchanged     integer,
    orphans            integer,
    territories        integer,
    business_units     integer,
    error              text,
    apac_compliance    numeric(5,2)         -- the APAC figure the run computed (the report's previous figure)
);
-- Ledgers created before run_id existed get it here; its unique index makes a retried REST write idempotent.
ALTER TABLE public.compliance_sync_runs ADD COLUMN IF NOT EXISTS run_id text;
CREATE UNIQUE INDEX IF NOT EXISTS compliance_sync_runs_run_id_key ON public.compliance_sync_runs (run_id);
CREATE INDEX IF NOT EXISTS compliance_sync_runs_fiscal_year_started_at_idx
    ON public.compliance_sync_runs (fiscal_year, started_at DESC);
-- Ledgers created before the report existed get the APAC figure here (a ledger without it still works).
ALTER TABLE public.compliance_sync_runs ADD COLUMN IF NOT EXISTS apac_compliance numeric(5,2);
COMMENT ON TABLE public.compliance_sync_runs IS
    'compliance_sync run ledger: one row per live run (SPEC 3.4), for "last synced" in the planning app.';
-- Supabase exposes public tables through its REST API: row-level security with no write policy keeps
-- the anon and signed-in roles from writing the ledger; the service role and the table owner (the job)
-- bypass it.
ALTER TABLE public.compliance_sync_runs ENABLE ROW LEVEL SECURITY;
-- On Supabase, signed-in users of the planning app may read it (not write it).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated')
       AND NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'public'
                       AND tablename = 'compliance_sync_runs' AND policyname = 'compliance_sync_runs_read') THEN
        CREATE POLICY compliance_sync_runs_read ON public.compliance_sync_runs FOR SELECT TO authenticated USING (true);
    END IF;
END
$$;

-- Supabase's REST API (PostgREST) caches the schema: make it see the new indexes and the ledger
-- (delivered at commit).
NOTIFY pgrst, 'reload schema';

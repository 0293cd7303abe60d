-- compliance_sync: the full schema of SPEC §3, for local use, tests and demos.
--
-- Applied by `compliance-sync migrate` (apply_full in backends/postgres/migrate.py), which refuses to run
-- against a database whose §3 tables already hold rows unless forced. Every statement is idempotent
-- (IF NOT EXISTS), so running it twice is harmless.
--
-- The tables carry realistic extra columns that the job never reads or writes (owners, notes,
-- timestamps, the planners' financial columns, ...). There are deliberately no foreign keys between
-- tables: real data violates them (events of unknown types, periods with unknown tiers), and the job
-- reports such rows rather than relying on the database to reject them.
--
-- Key indexes are named <table>_compliance_sync_key, as the minimal migration names them, so that
-- running the minimal migration afterwards finds them and changes nothing.
-- gen_random_uuid() is built into PostgreSQL 13+; no extension is needed.

-- ---------------------------------------------------------------------------------------------------
-- 3.1 Sources (read by the job)
-- ---------------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS public.account_plans (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id       uuid NULL,
    client_name     text NOT NULL,
    fiscal_year     integer NOT NULL,
    status          text DEFAULT 'draft',   -- draft, submitted, in_review, revision_requested, approved, archived
    -- not read or written by the job:
    plan_title text, owner text, summary text, submitted_at timestamptz, approved_at timestamptz, created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz DEFAULT now()
);
CREATE INDEX IF NOT EXISTS account_plans_fiscal_year_idx ON public.account_plans (fiscal_year);

CREATE TABLE IF NOT EXISTS public.client_segmentation (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_name     text NOT NULL,
    tier_id         uuid NULL,
    cse_name        text NULL,
    client_uuid     uuid NULL,
    effective_from  date NOT NULL,
    effective_to    date NULL,              -- last day the period applies; NULL = open
    -- not read or written by the job:
    change_reason text, notes text, created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz DEFAULT now()
);
CREATE INDEX IF NOT EXISTS client_segmentation_client_name_idx ON public.client_segmentation (client_name);

CREATE TABLE IF NOT EXISTS public.segmentation_tiers (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tier_name       text NOT NULL,
    -- not read or written by the job:
    tier_level integer, description text, color text, created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS public.segmentation_event_types (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    event_name      text NOT NULL,
    event_code      text UNIQUE,
    is_active       boolean DEFAULT true,
    -- not read or written by the job:
    description text, category text, sort_order integer, created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS public.tier_event_requirements (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tier_id         uuid,
    event_type_id   uuid,
    frequency       integer,                -- required per year; 0 = not required
    -- not read or written by the job:
    notes text, created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz DEFAULT now(),
    UNIQUE (tier_id, event_type_id)
);

CREATE TABLE IF NOT EXISTS public.segmentation_events (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_name     text NOT NULL,
    event_type_id   uuid NULL,
    event_date      date NULL,
    completed       boolean DEFAULT false,
    -- not read or written by the job:
    event_year integer GENERATED ALWAYS AS (extract(year FROM event_date)::integer) STORED, title text, location text, attendees text, notes text, created_by text, created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz DEFAULT now()
);
CREATE INDEX IF NOT EXISTS segmentation_events_event_date_idx ON public.segmentation_events (event_date);

CREATE TABLE IF NOT EXISTS public.segmentation_event_compliance (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_name           text NOT NULL,
    event_type_id         uuid,
    year                  integer,          -- calendar year
    expected_count        integer,
    actual_count          integer,
    compliance_percentage numeric(5,2),
    status                text,
    -- not read or written by the job:
    last_calculated_at timestamptz, created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz DEFAULT now(),
    UNIQUE (client_name, event_type_id, year)
);

CREATE TABLE IF NOT EXISTS public.territory_strategies (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    cse_name        text,
    territory       text,
    fiscal_year     integer NOT NULL,
    quarter         text NULL,              -- NULL or blank = annual; else Q1..Q4
    status          text DEFAULT 'draft',
    updated_at      timestamptz NULL,
    -- not read or written by the job:
    strategy_summary text, focus_areas jsonb, created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS territory_strategies_fiscal_year_idx ON public.territory_strategies (fiscal_year);

CREATE TABLE IF NOT EXISTS public.client_event_exclusions (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_name     text NOT NULL,
    event_type_id   uuid,
    reason          text NULL,
    created_by      text,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------------------------------------------
-- 3.2 Targets (written by the job: only the key, the owned columns and updated_at)
-- ---------------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS public.account_plan_event_requirements (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    plan_id               uuid NOT NULL,
    event_type_id         uuid NOT NULL,
    fiscal_year           integer NOT NULL,
    client_id             uuid,
    client_name           text,
    segment               text,
    event_type_name       text,
    required_count        integer,
    completed_count       integer,
    scheduled_count       integer,
    compliance_percentage numeric(5,2),
    status                text,
    next_due_date         date,
    linked_event_ids      jsonb,
    updated_at            timestamptz,
    -- never written by the job:
    notes text, ai_recommended_dates jsonb, created_at timestamptz DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS account_plan_event_requirements_compliance_sync_key
    ON public.account_plan_event_requirements (plan_id, event_type_id, fiscal_year);
CREATE INDEX IF NOT EXISTS account_plan_event_requirements_fiscal_year_idx
    ON public.account_plan_event_requirements (fiscal_year);

CREATE TABLE IF NOT EXISTS public.territory_compliance_summary (
    id                             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    territory_strategy_id          uuid NOT NULL,
    fiscal_year                    integer NOT NULL,
    territory                      text,
    cse_name                       text,
    total_clients                  integer,
    total_required_events          integer,
    total_completed_events         integer,
    overall_compliance_percentage  numeric(5,2),
    clients_at_risk                integer,
    clients_critical               integer,
    segment_breakdown              jsonb,
    monthly_capacity               jsonb,
    -- never written by the job
    notes                          text,
    created_at                     timestamptz DEFAULT now(),
    updated_at                     timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS territory_compliance_summary_compliance_sync_key
    ON public.territory_compliance_summary (territory_strategy_id, fiscal_year);

CREATE TABLE IF NOT EXISTS public.business_unit_planning (
    id                             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    bu_name                        text NOT NULL,
    fiscal_year                    integer NOT NULL,
    overall_compliance_percentage  numeric(5,2),
    clients_below_compliance       integer,
    territory_count                integer,
    territory_data                 jsonb,
    updated_at                     timestamptz,
    -- never written by the job: the planners' columns
    target_compliance numeric(5,2), revenue_target numeric, revenue_actual numeric, notes text, created_at timestamptz DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS business_unit_planning_compliance_sync_key
    ON public.business_unit_planning (bu_name, fiscal_year);

CREATE TABLE IF NOT EXISTS public.apac_planning_goals (
    id                         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    fiscal_year                integer NOT NULL,
    actual_compliance          numeric(5,2),
    below_compliance_accounts  integer,
    bu_contributions           jsonb,
    updated_at                 timestamptz,
    -- never written by the job: the planners' columns
    target_compliance numeric(5,2), revenue_target numeric, notes text, created_at timestamptz DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS apac_planning_goals_compliance_sync_key
    ON public.apac_planning_goals (fiscal_year);

-- ---------------------------------------------------------------------------------------------------
-- 3.4 The run ledger and PostgREST's schema reload: minimal.sql, which apply_full runs right after this
-- file in the same transaction (one definition for both migrations).
-- ---------------------------------------------------------------------------------------------------

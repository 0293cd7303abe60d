-- benchmarks/pure_sql.sql: SPEC §4-5 for one fiscal year, as one set-based script run inside PostgreSQL.
--
-- Reference code, not a product path: the yardstick for "the same computation done inside PostgreSQL"
-- and a second oracle in tests (compliance_sync_tests/test_pure_sql_baseline.py). No loops, no PL/pgSQL:
-- temp tables, joins and aggregates; integer / numeric arithmetic only (never float8). It writes the four
-- targets as a live run does (SPEC §5) and nothing else: no guards, no ledger, no warnings, no advisory
-- lock (run one FY at a time).
--
-- Run it in ONE transaction (its temp tables are ON COMMIT DROP). Inputs, filled beforehand in the same
-- transaction (benchmarks/pure_sql.py does it; from psql put them in a first file and run
-- `psql -1 -f params.sql -f benchmarks/pure_sql.sql`):
--
--   CREATE TEMP TABLE pure_sql_params (
--       fiscal_year int, fy_start date, fy_end date,  -- the FY's window (SPEC §2)
--       as_of date,                                    -- the reference date; the script takes min(as_of, fy_end)
--       at_risk_from numeric, compliant_from numeric, exceeded_from numeric,  -- thresholds, in percent
--       run_ts timestamptz                             -- updated_at of every new or changed row (NULL: now())
--   ) ON COMMIT DROP;                                  -- exactly one row
--   CREATE TEMP TABLE pure_sql_bu_map (kind text, name text, bu text) ON COMMIT DROP;
--       -- kind 'cse' (cse_name -> bu) or 'territory' (territory -> bu); the 'cse' entry wins
--
-- client_event_exclusions is optional (SPEC §3.1): when the table does not exist, create an empty
-- `CREATE TEMP TABLE client_event_exclusions (client_name text, event_type_id uuid, reason text)` first
-- (the runner does); pg_temp comes first in the search path, so the script reads it instead.
--
-- Output: the rows of the four targets, and the temp table ps_counts (target, action, n) with the rows
-- inserted / updated / deleted per target; its content is the script's last result.
--
-- Shape: every source is read once (events once, joined to the requirements and aggregated per
-- (client, event type) with FILTERs; per territory and month from the same temp table); clients get an
-- integer id early so later joins and groupings are on integers; the writes diff the wanted rows against
-- the FY's current rows in one FULL JOIN per target and then touch only inserted, changed and deleted rows.
--
-- Choices (the same as compliance_sync_tests/oracle.py where the SPEC leaves room):
-- * "nothing the job does not own" (pruning, SPEC §5) is tested generically, whatever the target's extra
--   columns: jsonb_strip_nulls(to_jsonb(row) - <key, owned, id, created_at, updated_at>) = '{}'. A foreign
--   jsonb column holding the JSON value null (not SQL NULL) therefore counts as null here.
-- * a strategy whose cse_name is null never matches a client; "annual" = quarter null or blank after trim.
-- * a pair is excluded when one of its exclusion rows has a null reason or a reason whose lower() does not
--   contain 'greyed out'.
-- * a requirement row of an inactive or unknown type, or of an unknown tier, contributes nothing; a null or
--   negative frequency counts as 0.
-- * a frequency above 366 (any tier_event_requirements row with both ids set) stops the script with an
--   error naming the tier and the event type (a cast error carrying the message).
-- * rows with a NULL key column are never updated, reset or deleted.
-- * linked_event_ids is to_jsonb(array_agg(id ORDER BY event_date, id)): the same JSON array of uuid strings
--   as jsonb_agg(id ORDER BY event_date, id), built faster (uuid[] first, one conversion per array).

SET LOCAL work_mem = '256MB';
SET LOCAL jit = off;  -- JIT compilation costs more than it saves here (measured: some statements 2-3x slower with it)

DROP TABLE IF EXISTS ps_p, ps_counts, ps_freq_check, ps_plans, ps_periods, ps_ts, ps_clients, ps_req, ps_ev, ps_cr, ps_cl,
    ps_terr, ps_bu, ps_d_req, ps_d_terr, ps_d_bu, ps_d_apac;

-- 0. Parameters ------------------------------------------------------------------------------------------
CREATE TEMP TABLE ps_p ON COMMIT DROP AS
SELECT fiscal_year AS fy,
       fy_start AS fs,
       fy_end AS fe,
       least(as_of, fy_end) AS as_of,
       at_risk_from::numeric AS t_risk,
       compliant_from::numeric AS t_ok,
       exceeded_from::numeric AS t_exc,
       coalesce(run_ts, now()) AS ts
  FROM pure_sql_params;

CREATE TEMP TABLE ps_counts (target text, action text, n bigint) ON COMMIT DROP;

-- the step-5 / step-6 formula in hundredths, as numeric(.., 2): floor((20000*c + r) / (2*r)) (integer
-- division of non-negative integers), capped at 20000 for a requirement, 100.00 when nothing is required
CREATE OR REPLACE FUNCTION pg_temp.ps_pct(c bigint, r bigint, cap boolean) RETURNS numeric
    LANGUAGE sql IMMUTABLE AS
$$ SELECT CASE WHEN r = 0 THEN 100.00
               WHEN cap THEN least((20000 * c + r) / (2 * r), 20000) * 0.01
               ELSE ((20000 * c + r) / (2 * r)) * 0.01 END $$;

-- frequency above 366: an error naming the tier and the event type (SPEC §4 step 3; a cast error carries
-- the message, and the statement returns no rows otherwise)
CREATE TEMP TABLE ps_freq_check ON COMMIT DROP AS
SELECT ('frequency ' || r.frequency || ' above 366 for tier ' || coalesce(t.tier_name, r.tier_id::text)
        || ' and event type ' || coalesce(et.event_code, et.event_name, r.event_type_id::text))::int AS failed
  FROM tier_event_requirements r
  LEFT JOIN segmentation_tiers t ON t.id = r.tier_id
  LEFT JOIN segmentation_event_types et ON et.id = r.event_type_id
 WHERE r.frequency > 366 AND r.tier_id IS NOT NULL AND r.event_type_id IS NOT NULL;

-- 1. Plans in scope -------------------------------------------------------------------------------------
CREATE TEMP TABLE ps_plans ON COMMIT DROP AS
SELECT id AS plan_id, client_id, client_name
  FROM account_plans
 WHERE fiscal_year = (SELECT fy FROM ps_p)
   AND status::text IS DISTINCT FROM 'archived';
ANALYZE ps_plans (client_name);

-- 2. Valid segment periods overlapping the FY -------------------------------------------------------------
CREATE TEMP TABLE ps_periods ON COMMIT DROP AS
SELECT s.id, s.client_name, s.tier_id, s.cse_name, s.client_uuid, s.effective_from, t.tier_name
  FROM client_segmentation s
  JOIN segmentation_tiers t ON t.id = s.tier_id
 WHERE s.client_name IN (SELECT client_name FROM ps_plans)
   AND s.effective_from <= (SELECT fe FROM ps_p)
   AND (s.effective_to IS NULL OR s.effective_to >= (SELECT fs FROM ps_p))
   AND (s.effective_to IS NULL OR s.effective_to >= s.effective_from);
ANALYZE ps_periods (client_name, tier_id);

-- 7a. The used strategy per CSE: annual first, then latest updated_at (null oldest), then smallest id
CREATE TEMP TABLE ps_ts ON COMMIT DROP AS
SELECT DISTINCT ON (cse_name) id AS sid, cse_name, territory
  FROM territory_strategies
 WHERE fiscal_year = (SELECT fy FROM ps_p)
   AND status::text IS DISTINCT FROM 'archived'
   AND cse_name IS NOT NULL
 ORDER BY cse_name, (quarter IS NULL OR trim(quarter::text) = '') DESC, updated_at DESC NULLS LAST, id;
ANALYZE ps_ts (sid, cse_name);

-- 2b. Clients with at least one valid period: the latest period (greatest effective_from, then greatest
-- id) gives segment, CSE and client_uuid; sid = the used strategy of its CSE (NULL: unassigned)
CREATE TEMP TABLE ps_clients ON COMMIT DROP AS
SELECT (row_number() OVER ())::int AS cid, l.client_name, l.segment, l.cse_name, l.client_uuid, ts.sid
  FROM (SELECT DISTINCT ON (client_name) client_name, tier_name AS segment, cse_name, client_uuid
          FROM ps_periods
         ORDER BY client_name, effective_from DESC, id DESC) l
  LEFT JOIN ps_ts ts ON ts.cse_name = l.cse_name;
ANALYZE ps_clients (cid, client_name, cse_name, sid);

-- 3. Requirements: max frequency over the tiers of all the client's periods, active types, exclusions ------
CREATE TEMP TABLE ps_req ON COMMIT DROP AS
SELECT c.cid, c.client_name, c.sid, et.id AS event_type_id, et.event_name, f.r
  FROM (SELECT ct.client_name, r.event_type_id, max(greatest(coalesce(r.frequency, 0), 0))::int AS r
          FROM (SELECT DISTINCT client_name, tier_id FROM ps_periods) ct
          JOIN tier_event_requirements r ON r.tier_id = ct.tier_id
         GROUP BY ct.client_name, r.event_type_id) f
  JOIN ps_clients c ON c.client_name = f.client_name
  JOIN segmentation_event_types et ON et.id = f.event_type_id AND et.is_active IS TRUE
 WHERE f.r > 0
   AND NOT EXISTS (
        SELECT 1
          FROM client_event_exclusions x
         WHERE x.client_name = f.client_name
           AND x.event_type_id = f.event_type_id
           AND (x.reason IS NULL OR strpos(lower(x.reason), 'greyed out') = 0));
ANALYZE ps_req (cid, client_name, event_type_id, sid);

-- 4. Counting: the events of each requirement in the FY window (events read once) ----------------------
CREATE TEMP TABLE ps_ev ON COMMIT DROP AS
SELECT q.cid, q.sid, e.event_type_id, e.id, e.event_date,
       (e.completed IS TRUE AND e.event_date <= (SELECT as_of FROM ps_p)) AS done
  FROM segmentation_events e
  JOIN ps_req q ON q.client_name = e.client_name AND q.event_type_id = e.event_type_id
 WHERE e.event_date BETWEEN (SELECT fs FROM ps_p) AND (SELECT fe FROM ps_p);
-- (no ANALYZE: ps_ev is only read whole, by aggregates)

-- 5. Per requirement: counts, percentage, status, next due date, linked events ---------------------------
CREATE TEMP TABLE ps_cr ON COMMIT DROP AS
WITH agg AS (
    SELECT cid, event_type_id,
           count(*) FILTER (WHERE done)::int AS c,
           count(*) FILTER (WHERE NOT done)::int AS s,
           to_jsonb(array_agg(id ORDER BY event_date, id)) AS linked
      FROM ps_ev
     GROUP BY cid, event_type_id
)
SELECT q.cid, q.sid, q.event_type_id, q.event_name, q.r, b.c, b.s, b.linked,
       pg_temp.ps_pct(b.c, q.r, true) AS pct,
       CASE WHEN 100 * b.c >= p.t_exc * q.r THEN 'exceeded'
            WHEN 100 * b.c >= p.t_ok * q.r THEN 'compliant'
            WHEN 100 * b.c >= p.t_risk * q.r THEN 'at_risk'
            ELSE 'critical' END AS status,
       -- the k-th due date falls on the last day of FY month ceil(12k/r); next = k = c + 1
       CASE WHEN b.c >= q.r THEN NULL
            ELSE (p.fs + make_interval(months => (12 * (b.c + 1) + q.r - 1) / q.r))::date - 1 END AS next_due
  FROM ps_req q
  LEFT JOIN agg a ON a.cid = q.cid AND a.event_type_id = q.event_type_id
 CROSS JOIN LATERAL (SELECT coalesce(a.c, 0) AS c, coalesce(a.s, 0) AS s,
                            coalesce(a.linked, '[]'::jsonb) AS linked) b
 CROSS JOIN ps_p p;
ANALYZE ps_cr (cid, sid, event_type_id, r);

-- 6. Per client (a client without requirement counts: pct 100.00, neither flag) ----------------------------
CREATE TEMP TABLE ps_cl ON COMMIT DROP AS
SELECT c.cid, c.client_name, c.segment, c.cse_name, c.client_uuid, c.sid,
       coalesce(a.req_total, 0) AS req_total,
       coalesce(a.cred_total, 0) AS cred_total,
       coalesce(a.crit, false) AS crit,
       coalesce(a.risk AND NOT a.crit, false) AS at_risk
  FROM ps_clients c
  LEFT JOIN (SELECT cid, sum(r)::bigint AS req_total, sum(least(c, r))::bigint AS cred_total,
                    bool_or(status = 'critical') AS crit, bool_or(status = 'at_risk') AS risk
               FROM ps_cr
              GROUP BY cid) a ON a.cid = c.cid;
ANALYZE ps_cl (cid, client_name, sid);

-- 7b. Territory rows: used strategies with at least one client -------------------------------------------
CREATE TEMP TABLE ps_terr ON COMMIT DROP AS
WITH totals AS (
    SELECT sid, count(*)::int AS n, sum(req_total)::bigint AS req, sum(cred_total)::bigint AS cred,
           count(*) FILTER (WHERE at_risk)::int AS n_risk, count(*) FILTER (WHERE crit)::int AS n_crit
      FROM ps_cl
     WHERE sid IS NOT NULL
     GROUP BY sid
), seg AS (
    SELECT sid, jsonb_object_agg(segment, jsonb_build_object(
               'clients', n, 'total_required', req, 'total_completed', cred,
               'compliance', pg_temp.ps_pct(cred, req, false))) AS breakdown
      FROM (SELECT sid, segment, count(*)::int AS n, sum(req_total)::bigint AS req, sum(cred_total)::bigint AS cred
              FROM ps_cl
             WHERE sid IS NOT NULL
             GROUP BY sid, segment) s
     GROUP BY sid
), months AS (
    SELECT j, (p.fs + make_interval(months => j - 1))::timestamp AS m
      FROM generate_series(1, 12) AS g(j) CROSS JOIN ps_p p
), due AS (  -- FY month j holds floor(j*r/12) - floor((j-1)*r/12) due dates of a requirement; once per client
    SELECT x.sid, g.j, sum(x.k * (g.j * x.r / 12 - (g.j - 1) * x.r / 12))::bigint AS required
      FROM (SELECT sid, r, count(*) AS k FROM ps_cr WHERE sid IS NOT NULL GROUP BY sid, r) x
     CROSS JOIN generate_series(1, 12) AS g(j)
     GROUP BY x.sid, g.j
), done AS (  -- each step-4 event once, by the month of event_date
    SELECT sid, date_trunc('month', event_date::timestamp) AS m,
           count(*) FILTER (WHERE done) AS completed, count(*) FILTER (WHERE NOT done) AS scheduled
      FROM ps_ev
     WHERE sid IS NOT NULL
     GROUP BY sid, date_trunc('month', event_date::timestamp)
), cap AS (
    SELECT tt.sid, jsonb_object_agg(
               to_char(mo.m, 'YYYY-MM'),
               jsonb_build_object('required', coalesce(du.required, 0),
                                  'completed', coalesce(dn.completed, 0),
                                  'scheduled', coalesce(dn.scheduled, 0))) AS capacity
      FROM totals tt
     CROSS JOIN months mo
      LEFT JOIN due du ON du.sid = tt.sid AND du.j = mo.j
      LEFT JOIN done dn ON dn.sid = tt.sid AND dn.m = mo.m
     GROUP BY tt.sid
)
SELECT ts.sid, ts.territory, ts.cse_name, tt.n, tt.req, tt.cred,
       pg_temp.ps_pct(tt.cred, tt.req, false) AS pct, tt.n_risk, tt.n_crit,
       seg.breakdown, cap.capacity,
       -- 8. the BU: the CSE entry wins over the territory entry; NULL = unmapped
       coalesce((SELECT m.bu FROM pure_sql_bu_map m WHERE m.kind = 'cse' AND m.name = ts.cse_name),
                (SELECT m.bu FROM pure_sql_bu_map m WHERE m.kind = 'territory' AND m.name = ts.territory)) AS bu
  FROM totals tt
  JOIN ps_ts ts ON ts.sid = tt.sid
  JOIN seg ON seg.sid = tt.sid
  JOIN cap ON cap.sid = tt.sid;
ANALYZE ps_terr (sid, bu);

-- 8. Business units with at least one territory ---------------------------------------------------------
CREATE TEMP TABLE ps_bu ON COMMIT DROP AS
SELECT bu, sum(req)::bigint AS req, sum(cred)::bigint AS cred, sum(n)::int AS n,
       sum(n_risk + n_crit)::int AS n_below, count(*)::int AS n_terr,
       jsonb_agg(jsonb_build_object('territory', territory, 'cse_name', cse_name, 'clients', n, 'compliance', pct)
                 ORDER BY coalesce(territory, '') COLLATE "C", coalesce(cse_name, '') COLLATE "C", sid) AS territory_data
  FROM ps_terr
 WHERE bu IS NOT NULL
 GROUP BY bu;

-- The diffs (SPEC §5): the wanted rows against the FY's current rows, one FULL JOIN per target. Kept:
-- 'insert' (wanted, absent), 'update' (owned columns distinct, jsonb compared as jsonb), 'delete' (present,
-- not wanted; pruned below only when it carries nothing the job does not own). Rows with a NULL key column
-- are not read, hence never touched.

CREATE TEMP TABLE ps_d_req ON COMMIT DROP AS
WITH w AS (
    SELECT pl.plan_id, cr.event_type_id, p.fy AS fiscal_year,
           coalesce(pl.client_id, cl.client_uuid) AS client_id, pl.client_name, cl.segment,
           cr.event_name AS event_type_name, cr.r AS required_count, cr.c AS completed_count,
           cr.s AS scheduled_count, cr.pct AS compliance_percentage, cr.status,
           cr.next_due AS next_due_date, cr.linked AS linked_event_ids
      FROM ps_plans pl
      JOIN ps_cl cl ON cl.client_name = pl.client_name
      JOIN ps_cr cr ON cr.cid = cl.cid
     CROSS JOIN ps_p p
), cur AS (
    SELECT t.ctid AS tid, t.plan_id, t.event_type_id, t.client_id, t.client_name, t.segment, t.event_type_name,
           t.required_count, t.completed_count, t.scheduled_count, t.compliance_percentage, t.status,
           t.next_due_date, t.linked_event_ids
      FROM account_plan_event_requirements t
     WHERE t.fiscal_year = (SELECT fy FROM ps_p) AND t.plan_id IS NOT NULL AND t.event_type_id IS NOT NULL
)
SELECT CASE WHEN cur.tid IS NULL THEN 'insert' WHEN w.plan_id IS NULL THEN 'delete' ELSE 'update' END AS action,
       cur.tid, w.*
  FROM w FULL JOIN cur ON cur.plan_id = w.plan_id AND cur.event_type_id = w.event_type_id
 WHERE cur.tid IS NULL OR w.plan_id IS NULL
    OR (cur.client_id, cur.client_name, cur.segment, cur.event_type_name, cur.required_count, cur.completed_count,
        cur.scheduled_count, cur.compliance_percentage, cur.status, cur.next_due_date, cur.linked_event_ids)
       IS DISTINCT FROM
       (w.client_id, w.client_name, w.segment, w.event_type_name, w.required_count, w.completed_count,
        w.scheduled_count, w.compliance_percentage, w.status, w.next_due_date, w.linked_event_ids);

CREATE TEMP TABLE ps_d_terr ON COMMIT DROP AS
WITH w AS (
    SELECT t.sid AS territory_strategy_id, p.fy AS fiscal_year, t.territory, t.cse_name,
           t.n AS total_clients, t.req AS total_required_events, t.cred AS total_completed_events,
           t.pct AS overall_compliance_percentage, t.n_risk AS clients_at_risk, t.n_crit AS clients_critical,
           t.breakdown AS segment_breakdown, t.capacity AS monthly_capacity
      FROM ps_terr t CROSS JOIN ps_p p
), cur AS (
    SELECT t.ctid AS tid, t.territory_strategy_id, t.territory, t.cse_name, t.total_clients, t.total_required_events,
           t.total_completed_events, t.overall_compliance_percentage, t.clients_at_risk, t.clients_critical,
           t.segment_breakdown, t.monthly_capacity
      FROM territory_compliance_summary t
     WHERE t.fiscal_year = (SELECT fy FROM ps_p) AND t.territory_strategy_id IS NOT NULL
)
SELECT CASE WHEN cur.tid IS NULL THEN 'insert' WHEN w.territory_strategy_id IS NULL THEN 'delete' ELSE 'update' END AS action,
       cur.tid, w.*
  FROM w FULL JOIN cur ON cur.territory_strategy_id = w.territory_strategy_id
 WHERE cur.tid IS NULL OR w.territory_strategy_id IS NULL
    OR (cur.territory, cur.cse_name, cur.total_clients, cur.total_required_events, cur.total_completed_events,
        cur.overall_compliance_percentage, cur.clients_at_risk, cur.clients_critical, cur.segment_breakdown,
        cur.monthly_capacity)
       IS DISTINCT FROM
       (w.territory, w.cse_name, w.total_clients, w.total_required_events, w.total_completed_events,
        w.overall_compliance_percentage, w.clients_at_risk, w.clients_critical, w.segment_breakdown,
        w.monthly_capacity);

-- business_unit_planning: never pruned; a row of the FY that gets no territory is reset (SPEC §4 step 8)
CREATE TEMP TABLE ps_d_bu ON COMMIT DROP AS
WITH w AS (
    SELECT b.bu AS bu_name, p.fy AS fiscal_year, pg_temp.ps_pct(b.cred, b.req, false) AS overall_compliance_percentage,
           b.n_below AS clients_below_compliance, b.n_terr AS territory_count, b.territory_data
      FROM ps_bu b CROSS JOIN ps_p p
), cur AS (
    SELECT t.ctid AS tid, t.bu_name, t.overall_compliance_percentage, t.clients_below_compliance, t.territory_count,
           t.territory_data
      FROM business_unit_planning t
     WHERE t.fiscal_year = (SELECT fy FROM ps_p) AND t.bu_name IS NOT NULL
), x AS (
    SELECT cur.tid, coalesce(w.bu_name, cur.bu_name) AS bu_name, (SELECT fy FROM ps_p) AS fiscal_year,
           CASE WHEN w.bu_name IS NULL THEN NULL ELSE w.overall_compliance_percentage END AS overall_compliance_percentage,
           CASE WHEN w.bu_name IS NULL THEN 0 ELSE w.clients_below_compliance END AS clients_below_compliance,
           CASE WHEN w.bu_name IS NULL THEN 0 ELSE w.territory_count END AS territory_count,
           CASE WHEN w.bu_name IS NULL THEN '[]'::jsonb ELSE w.territory_data END AS territory_data,
           cur.overall_compliance_percentage AS old_pct, cur.clients_below_compliance AS old_below,
           cur.territory_count AS old_count, cur.territory_data AS old_data
      FROM w FULL JOIN cur ON cur.bu_name = w.bu_name
)
SELECT CASE WHEN tid IS NULL THEN 'insert' ELSE 'update' END AS action, tid, bu_name, fiscal_year,
       overall_compliance_percentage, clients_below_compliance, territory_count, territory_data
  FROM x
 WHERE tid IS NULL
    OR (old_pct, old_below, old_count, old_data)
       IS DISTINCT FROM (overall_compliance_percentage, clients_below_compliance, territory_count, territory_data);

-- apac_planning_goals: the FY's row is always written (SPEC §4 step 9)
CREATE TEMP TABLE ps_d_apac ON COMMIT DROP AS
WITH unassigned AS (  -- clients with no territory, or whose territory has no BU
    SELECT count(*) AS n, sum(cl.req_total)::bigint AS req, sum(cl.cred_total)::bigint AS cred,
           count(*) FILTER (WHERE cl.at_risk OR cl.crit)::int AS n_below
      FROM ps_cl cl
      LEFT JOIN ps_terr t ON t.sid = cl.sid
     WHERE t.bu IS NULL
), contributions AS (
    SELECT false AS last, b.bu AS bu_name,
           jsonb_build_object('bu_name', b.bu, 'compliance', pg_temp.ps_pct(b.cred, b.req, false),
                              'clients', b.n, 'clients_below', b.n_below) AS entry
      FROM ps_bu b
    UNION ALL
    SELECT true, 'Unassigned',
           jsonb_build_object('bu_name', 'Unassigned', 'compliance', pg_temp.ps_pct(u.cred, u.req, false),
                              'clients', u.n, 'clients_below', u.n_below)
      FROM unassigned u
     WHERE u.n > 0
), w AS (
    SELECT p.fy AS fiscal_year,
           CASE WHEN a.n = 0 THEN NULL ELSE pg_temp.ps_pct(a.cred, a.req, false) END AS actual_compliance,
           a.n_below AS below_compliance_accounts,
           coalesce((SELECT jsonb_agg(entry ORDER BY last, bu_name COLLATE "C") FROM contributions), '[]'::jsonb)
               AS bu_contributions
      FROM ps_p p
     CROSS JOIN (SELECT count(*) AS n, coalesce(sum(req_total), 0)::bigint AS req,
                        coalesce(sum(cred_total), 0)::bigint AS cred,
                        count(*) FILTER (WHERE at_risk OR crit)::int AS n_below
                   FROM ps_cl) a
)
SELECT CASE WHEN cur.tid IS NULL THEN 'insert' ELSE 'update' END AS action, cur.tid, w.*
  FROM w
  LEFT JOIN (SELECT t.ctid AS tid, t.fiscal_year, t.actual_compliance, t.below_compliance_accounts, t.bu_contributions
               FROM apac_planning_goals t) cur ON cur.fiscal_year = w.fiscal_year
 WHERE cur.tid IS NULL
    OR (cur.actual_compliance, cur.below_compliance_accounts, cur.bu_contributions)
       IS DISTINCT FROM (w.actual_compliance, w.below_compliance_accounts, w.bu_contributions);

-- Writing: changed rows updated in place (by ctid, read in this transaction), new rows inserted, stale rows
-- pruned; every changed or new row gets the run's one updated_at ------------------------------------------

-- account_plan_event_requirements
WITH u AS (
    UPDATE account_plan_event_requirements t
       SET client_id = d.client_id, client_name = d.client_name, segment = d.segment,
           event_type_name = d.event_type_name, required_count = d.required_count,
           completed_count = d.completed_count, scheduled_count = d.scheduled_count,
           compliance_percentage = d.compliance_percentage, status = d.status,
           next_due_date = d.next_due_date, linked_event_ids = d.linked_event_ids,
           updated_at = (SELECT ts FROM ps_p)
      FROM ps_d_req d
     WHERE d.action = 'update' AND t.ctid = d.tid
    RETURNING 1
)
INSERT INTO ps_counts SELECT 'account_plan_event_requirements', 'updated', count(*) FROM u;

WITH i AS (
    INSERT INTO account_plan_event_requirements
           (plan_id, event_type_id, fiscal_year, client_id, client_name, segment, event_type_name, required_count,
            completed_count, scheduled_count, compliance_percentage, status, next_due_date, linked_event_ids, updated_at)
    SELECT d.plan_id, d.event_type_id, d.fiscal_year, d.client_id, d.client_name, d.segment, d.event_type_name,
           d.required_count, d.completed_count, d.scheduled_count, d.compliance_percentage, d.status,
           d.next_due_date, d.linked_event_ids, (SELECT ts FROM ps_p)
      FROM ps_d_req d
     WHERE d.action = 'insert'
     ORDER BY d.plan_id, d.event_type_id  -- key order: the unique index is filled left to right
    RETURNING 1
)
INSERT INTO ps_counts SELECT 'account_plan_event_requirements', 'inserted', count(*) FROM i;

WITH d AS (
    DELETE FROM account_plan_event_requirements t
     WHERE t.ctid = ANY (ARRAY(SELECT tid FROM ps_d_req WHERE action = 'delete'))
       AND jsonb_strip_nulls(to_jsonb(t) - ARRAY[
               'id', 'created_at', 'updated_at', 'plan_id', 'event_type_id', 'fiscal_year',
               'client_id', 'client_name', 'segment', 'event_type_name', 'required_count', 'completed_count',
               'scheduled_count', 'compliance_percentage', 'status', 'next_due_date', 'linked_event_ids']) = '{}'::jsonb
    RETURNING 1
)
INSERT INTO ps_counts SELECT 'account_plan_event_requirements', 'deleted', count(*) FROM d;

-- territory_compliance_summary
WITH u AS (
    UPDATE territory_compliance_summary t
       SET territory = d.territory, cse_name = d.cse_name, total_clients = d.total_clients,
           total_required_events = d.total_required_events, total_completed_events = d.total_completed_events,
           overall_compliance_percentage = d.overall_compliance_percentage, clients_at_risk = d.clients_at_risk,
           clients_critical = d.clients_critical, segment_breakdown = d.segment_breakdown,
           monthly_capacity = d.monthly_capacity, updated_at = (SELECT ts FROM ps_p)
      FROM ps_d_terr d
     WHERE d.action = 'update' AND t.ctid = d.tid
    RETURNING 1
)
INSERT INTO ps_counts SELECT 'territory_compliance_summary', 'updated', count(*) FROM u;

WITH i AS (
    INSERT INTO territory_compliance_summary
           (territory_strategy_id, fiscal_year, territory, cse_name, total_clients, total_required_events,
            total_completed_events, overall_compliance_percentage, clients_at_risk, clients_critical,
            segment_breakdown, monthly_capacity, updated_at)
    SELECT d.territory_strategy_id, d.fiscal_year, d.territory, d.cse_name, d.total_clients, d.total_required_events,
           d.total_completed_events, d.overall_compliance_percentage, d.clients_at_risk, d.clients_critical,
           d.segment_breakdown, d.monthly_capacity, (SELECT ts FROM ps_p)
      FROM ps_d_terr d
     WHERE d.action = 'insert'
    RETURNING 1
)
INSERT INTO ps_counts SELECT 'territory_compliance_summary', 'inserted', count(*) FROM i;

WITH d AS (
    DELETE FROM territory_compliance_summary t
     WHERE t.ctid = ANY (ARRAY(SELECT tid FROM ps_d_terr WHERE action = 'delete'))
       AND jsonb_strip_nulls(to_jsonb(t) - ARRAY[
               'id', 'created_at', 'updated_at', 'territory_strategy_id', 'fiscal_year',
               'territory', 'cse_name', 'total_clients', 'total_required_events', 'total_completed_events',
               'overall_compliance_percentage', 'clients_at_risk', 'clients_critical', 'segment_breakdown',
               'monthly_capacity']) = '{}'::jsonb
    RETURNING 1
)
INSERT INTO ps_counts SELECT 'territory_compliance_summary', 'deleted', count(*) FROM d;

-- business_unit_planning
WITH u AS (
    UPDATE business_unit_planning t
       SET overall_compliance_percentage = d.overall_compliance_percentage,
           clients_below_compliance = d.clients_below_compliance, territory_count = d.territory_count,
           territory_data = d.territory_data, updated_at = (SELECT ts FROM ps_p)
      FROM ps_d_bu d
     WHERE d.action = 'update' AND t.ctid = d.tid
    RETURNING 1
)
INSERT INTO ps_counts SELECT 'business_unit_planning', 'updated', count(*) FROM u;

WITH i AS (
    INSERT INTO business_unit_planning
           (bu_name, fiscal_year, overall_compliance_percentage, clients_below_compliance, territory_count,
            territory_data, updated_at)
    SELECT d.bu_name, d.fiscal_year, d.overall_compliance_percentage, d.clients_below_compliance, d.territory_count,
           d.territory_data, (SELECT ts FROM ps_p)
      FROM ps_d_bu d
     WHERE d.action = 'insert'
    RETURNING 1
)
INSERT INTO ps_counts SELECT 'business_unit_planning', 'inserted', count(*) FROM i;

INSERT INTO ps_counts VALUES ('business_unit_planning', 'deleted', 0);

-- apac_planning_goals
WITH u AS (
    UPDATE apac_planning_goals t
       SET actual_compliance = d.actual_compliance, below_compliance_accounts = d.below_compliance_accounts,
           bu_contributions = d.bu_contributions, updated_at = (SELECT ts FROM ps_p)
      FROM ps_d_apac d
     WHERE d.action = 'update' AND t.ctid = d.tid
    RETURNING 1
)
INSERT INTO ps_counts SELECT 'apac_planning_goals', 'updated', count(*) FROM u;

WITH i AS (
    INSERT INTO apac_planning_goals (fiscal_year, actual_compliance, below_compliance_accounts, bu_contributions, updated_at)
    SELECT d.fiscal_year, d.actual_compliance, d.below_compliance_accounts, d.bu_contributions, (SELECT ts FROM ps_p)
      FROM ps_d_apac d
     WHERE d.action = 'insert'
    RETURNING 1
)
INSERT INTO ps_counts SELECT 'apac_planning_goals', 'inserted', count(*) FROM i;

INSERT INTO ps_counts VALUES ('apac_planning_goals', 'deleted', 0);

DROP FUNCTION pg_temp.ps_pct(bigint, bigint, boolean);

SELECT target, action, n FROM ps_counts ORDER BY target, action;

-- Indexes behind every documented list filter, each led by tenant_id (issue 28, item 3): a
-- filtered list of a tenant with a million rows must not scan them. The door plans every query
-- with its values (plan_cache_mode = force_custom_plan), so `$n IS NULL OR col = $n` filters use
-- these. Checked by the store test `every_list_filter_uses_an_index_led_by_tenant_id`.

-- GET /v1/sessions?state=
CREATE INDEX agent_sessions_by_state ON bulkhead.agent_sessions (tenant_id, state, id);

-- GET /v1/audit/events?since=&until=&actor_id=&action=&outcome=&resource_id=
CREATE INDEX audit_events_by_time ON bulkhead.audit_events (tenant_id, occurred_at, id);
CREATE INDEX audit_events_by_actor ON bulkhead.audit_events (tenant_id, actor_id, id);
CREATE INDEX audit_events_by_action ON bulkhead.audit_events (tenant_id, action, id);
CREATE INDEX audit_events_by_outcome ON bulkhead.audit_events (tenant_id, outcome, id);
CREATE INDEX audit_events_by_resource ON bulkhead.audit_events (tenant_id, resource_id, id);

-- GET /v1/role-assignments?role_id=
CREATE INDEX role_assignments_by_role ON bulkhead.role_assignments (tenant_id, role_id, id);

-- Sweeping login_throttle rows past their lock window (issue 28, item 5).
CREATE INDEX login_throttle_by_last_failure ON bulkhead.login_throttle (tenant_id, last_failure_at);

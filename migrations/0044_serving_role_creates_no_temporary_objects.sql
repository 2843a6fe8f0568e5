-- The serving role may create no temporary table, function or trigger (found at stop 44).
--
-- PostgreSQL grants `TEMPORARY` on every database to `PUBLIC`. With it the serving role can
-- create a temporary table and a trigger function of its own in `pg_temp`, and a trigger fired by
-- its own insert runs at depth 1: from there it could call the SECURITY DEFINER counter functions
-- (`bulkhead.quota_charge`, `bulkhead.quota_charge_message`), whose only guard is
-- `pg_trigger_depth() >= 1`, with any tenant and amount, and so move another tenant's quota
-- counters. Reaching that takes arbitrary SQL as the serving role, which can also choose its
-- own tenant context (the context is a setting the serving role sets): this is defence in
-- depth, not a tenant boundary against that role. The privilege goes all the same, from
-- `PUBLIC` and from the serving role itself. A temporary object made before this ran lives
-- until its session ends: restart the servers after migrating a running deployment.
--
-- The owner of the database keeps it (an owner's implicit privileges are not `PUBLIC`'s); the
-- owner role stages a tenant's rows in a temporary table when it moves them
-- (`lifecycle/moves/copy.rs`). A migration role that does not own the database cannot revoke a
-- privilege the owner granted: then this migration fails with what to run, rather than leave
-- the hole open (`verify_app_role` also refuses to serve through a role that has it).

DO $$
DECLARE
    v_db text := current_database();
BEGIN
    -- Every tenant schema of the database runs this migration too, several at once
    -- (`tiers::migrate_all`): one at a time here, and a REVOKE only where the privilege is still
    -- granted, since concurrent grants on one catalog row fail ("tuple concurrently updated").
    PERFORM pg_advisory_xact_lock(hashtext('bulkhead 0044 serving role creates nothing'));
    IF EXISTS (SELECT 1 FROM pg_database d, aclexplode(COALESCE(d.datacl, acldefault('d', d.datdba))) a
               WHERE d.datname = v_db AND a.privilege_type = 'TEMPORARY'
                 AND a.grantee IN (0, (SELECT oid FROM pg_roles WHERE rolname = 'bulkhead_app'))) THEN
        EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC, bulkhead_app', v_db);
    END IF;
    -- A database first made before PostgreSQL 15 still lets PUBLIC create in `public`.
    IF EXISTS (SELECT 1 FROM pg_namespace n, aclexplode(COALESCE(n.nspacl, acldefault('n', n.nspowner))) a
               WHERE n.nspname = 'public' AND a.privilege_type = 'CREATE' AND a.grantee = 0) THEN
        REVOKE CREATE ON SCHEMA public FROM PUBLIC;
    END IF;
    IF has_database_privilege('bulkhead_app', v_db, 'TEMPORARY') THEN
        RAISE EXCEPTION 'the serving role bulkhead_app can still create temporary objects in database %', v_db
            USING HINT = format('As the database''s owner run: REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC, bulkhead_app; '
                                'GRANT TEMPORARY ON DATABASE %I TO %I', v_db, v_db, current_user);
    END IF;
    IF NOT has_database_privilege(current_user, v_db, 'TEMPORARY') THEN
        RAISE EXCEPTION 'the migration role % cannot create temporary tables in database % (tenant moves need them)', current_user, v_db
            USING HINT = format('As the database''s owner run: GRANT TEMPORARY ON DATABASE %I TO %I', v_db, current_user);
    END IF;
END
$$;

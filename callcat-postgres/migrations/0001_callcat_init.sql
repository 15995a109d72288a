-- callcat schema, version 1: calls, transcripts, call windows, and the
-- `callcat_due` NOTIFY trigger. Table and function names are unqualified: the
-- store runs this with `search_path` set to its schema (or the default one).
--
-- Every partial-index predicate below is repeated verbatim by the queries in
-- src/sql.rs (the planner only uses a partial index when the query's WHERE
-- clause implies its predicate); a unit test checks they stay in sync.

CREATE TABLE calls (
    id               uuid        PRIMARY KEY,
    tenant_id        text        NOT NULL,
    user_id          text        NOT NULL,
    status           text        NOT NULL CHECK (status IN (
                         'SCHEDULED', 'DISPATCHING', 'RINGING', 'IN_PROGRESS', 'RETRY_PENDING',
                         'CANCELING', 'COMPLETED', 'FAILED', 'CANCELED', 'EXPIRED')),
    scheduled_for    timestamptz NOT NULL,
    next_action_at   timestamptz,
    lease_worker     text,
    lease_until      timestamptz,
    ended_at         timestamptz,
    finished_at      timestamptz,
    -- Call::finished_sort_key(): COALESCE(finished_at, ended_at, updated_at).
    finished_key     timestamptz NOT NULL,
    provider_call_id text,
    idempotency_key  text,
    version          bigint      NOT NULL CHECK (version >= 0),
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    -- The whole serialized Call (serde), kept consistent with the columns above.
    record           jsonb       NOT NULL
);

-- claim_due and next_due_at: claimable calls by due time (small: only live work).
CREATE INDEX calls_due_idx ON calls (next_action_at, id)
    WHERE status IN ('SCHEDULED', 'RETRY_PENDING', 'DISPATCHING') AND next_action_at IS NOT NULL;

-- list(owner, Upcoming): an owner's unfinished calls, soonest scheduled_for first.
CREATE INDEX calls_owner_upcoming_idx ON calls (tenant_id, user_id, scheduled_for, id)
    WHERE status IN ('SCHEDULED', 'DISPATCHING', 'RINGING', 'IN_PROGRESS', 'RETRY_PENDING', 'CANCELING');

-- list(owner, Finished): an owner's finished calls, latest finished_key first.
CREATE INDEX calls_owner_finished_idx ON calls (tenant_id, user_id, finished_key DESC, id DESC)
    WHERE status IN ('COMPLETED', 'FAILED', 'CANCELED', 'EXPIRED');

-- find_by_provider_call_id; at most one call per provider call id.
CREATE UNIQUE INDEX calls_provider_call_id_key ON calls (provider_call_id);

-- create: idempotency keys are unique per owner (NULL keys never collide).
CREATE UNIQUE INDEX calls_idempotency_key ON calls (tenant_id, user_id, idempotency_key);

-- list_active(Tenant / Owner): a tenant's active calls, oldest scheduled_for first.
CREATE INDEX calls_tenant_active_idx ON calls (tenant_id, scheduled_for, id)
    WHERE status IN ('DISPATCHING', 'RINGING', 'IN_PROGRESS', 'CANCELING');

-- list_active(All): every active call, oldest scheduled_for first (sweeper, poller).
CREATE INDEX calls_active_idx ON calls (scheduled_for, id)
    WHERE status IN ('DISPATCHING', 'RINGING', 'IN_PROGRESS', 'CANCELING');

-- list_tenant_range: a tenant's calls by scheduled_for (analytics).
CREATE INDEX calls_tenant_scheduled_idx ON calls (tenant_id, scheduled_for, id);

-- Wake sleeping schedulers (in any process) when a call becomes claimable or is
-- moved earlier. NOTIFY is delivered on commit, so nobody wakes for a rolled-back
-- write. The payload names the schema so listeners can ignore other schemas.
CREATE FUNCTION callcat_notify_due() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.next_action_at IS NOT NULL
       AND NEW.status IN ('SCHEDULED', 'RETRY_PENDING', 'DISPATCHING')
       AND (TG_OP = 'INSERT'
            OR OLD.next_action_at IS NULL
            OR OLD.status NOT IN ('SCHEDULED', 'RETRY_PENDING', 'DISPATCHING')
            OR NEW.next_action_at < OLD.next_action_at) THEN
        PERFORM pg_notify('callcat_due', json_build_object(
            'schema', TG_TABLE_SCHEMA,
            'id', NEW.id,
            'next_action_at', NEW.next_action_at)::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER calls_notify_due
    AFTER INSERT OR UPDATE OF status, next_action_at ON calls
    FOR EACH ROW EXECUTE FUNCTION callcat_notify_due();

CREATE TABLE transcripts (
    call_id          uuid        PRIMARY KEY,
    tenant_id        text        NOT NULL,
    user_id          text        NOT NULL,
    provider_call_id text,
    segments         jsonb       NOT NULL DEFAULT '[]'::jsonb,
    text             text,
    updated_at       timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL
);

-- TranscriptStore::get_by_provider_call_id.
CREATE INDEX transcripts_provider_call_id_idx ON transcripts (provider_call_id)
    WHERE provider_call_id IS NOT NULL;

-- TranscriptStore::delete_expired (TTL).
CREATE INDEX transcripts_expires_at_idx ON transcripts (expires_at);

CREATE TABLE call_windows (
    id          uuid        PRIMARY KEY,
    tenant_id   text        NOT NULL,
    user_id     text        NOT NULL,
    created_at  timestamptz NOT NULL,
    -- The whole serialized CallWindow (serde).
    record      jsonb       NOT NULL
);

-- WindowStore::list(owner): an owner's windows in id (= creation, UUIDv7) order.
-- (list_all pages over the primary key.)
CREATE INDEX call_windows_owner_idx ON call_windows (tenant_id, user_id, id);

-- callcat schema, version 3: per-tenant do-not-call lists.
--
-- One row per (tenant, number). `number_key` identifies the number without
-- revealing it: with a FieldCipher it is the number's blind index
-- (`bi<key id>.<base64>`, keyed HMAC-SHA256) and `phone_number` holds the number
-- sealed (`cc1.<key id>.<base64>`, owner scope = the tenant and the pseudo-user
-- `do-not-call`); without a cipher both hold the E.164 number, as the calls table
-- keeps numbers in the clear without one. The two forms never collide: a blind
-- index starts with `bi`, an E.164 number with `+`.
CREATE TABLE do_not_call (
    tenant_id    text        NOT NULL,
    number_key   text        NOT NULL,
    phone_number text        NOT NULL,
    added_by     text        NOT NULL,
    added_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, number_key)
);

-- DoNotCallStore::list: a tenant's entries, oldest first, keyed (added_at, number_key).
-- (add, remove and contains use the primary key.)
CREATE INDEX do_not_call_tenant_added_idx ON do_not_call (tenant_id, added_at, number_key);

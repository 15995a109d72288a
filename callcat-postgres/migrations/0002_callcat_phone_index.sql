-- callcat schema, version 2: the blind index of a call's phone number.
--
-- With a FieldCipher configured the `record` JSONB holds the phone number, caller
-- number and recording URL sealed (AES-256-GCM, `cc1.<key id>.<base64>`), and
-- `phone_index` holds a keyed HMAC of the phone number (`bi<key id>.<base64>`),
-- never the plaintext. NULL for calls written without a cipher.
ALTER TABLE calls ADD COLUMN phone_index text;

-- active_calls_to_number: "is a call to this number already in flight?" Only
-- active calls, so it stays small. The predicate is repeated verbatim by the query.
CREATE INDEX calls_active_phone_idx ON calls (phone_index, tenant_id, user_id)
    WHERE status IN ('DISPATCHING', 'RINGING', 'IN_PROGRESS', 'CANCELING') AND phone_index IS NOT NULL;

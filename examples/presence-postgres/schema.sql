-- Tables of the presence example (presence.py): who is online, and who acknowledged which
-- message. Safe to run again: it only creates what is missing.
--
--   psql "$DATABASE_URL" -f schema.sql

-- One row per client id: its latest session as the events tell it.
--
-- A row changes only when an event is newer than the one that wrote it, by
-- (session_seq, online = false, last_event_at): a later session wins; within a session, a
-- disconnected wins over its connected; between two disconnecteds of one session (an MQTT 5
-- session_expired after its disconnect), the later ts wins. So events may come in any order
-- and any number of times: the row ends the same.
CREATE TABLE IF NOT EXISTS presence (
    client_id       text PRIMARY KEY,
    online          boolean NOT NULL,
    -- The broker's session_seq: the same on a connected and its disconnected, growing per
    -- client id (u64, hence numeric).
    session_seq     numeric(20, 0) NOT NULL,
    -- When this session connected (a disconnected event carries it too).
    connected_at    timestamptz NOT NULL,
    -- When it disconnected, and why (null while online).
    disconnected_at timestamptz,
    reason          text,
    -- From the connected event (null until it arrives, if its disconnected came first).
    username        text,
    peer            text,
    -- events.node of the broker or tap that saw it (null when not set).
    node            text,
    -- The event that wrote this row: connected or disconnected, and its ts.
    last_event      text NOT NULL CHECK (last_event IN ('connected', 'disconnected')),
    last_event_at   timestamptz NOT NULL
);

CREATE INDEX IF NOT EXISTS presence_online ON presence (client_id) WHERE online;

-- One row per (message, acknowledging client): the first acknowledgement of the message
-- (product_id, message_id) by ack_client_id. Ids are stored as text (an integer id 42 as '42').
CREATE TABLE IF NOT EXISTS acks (
    product_id    text NOT NULL,
    message_id    text NOT NULL,
    ack_client_id text NOT NULL,
    ts            timestamptz NOT NULL,
    pub_client_id text,
    topic         text,
    qos           smallint,
    -- MQTT 5 subscribers only: the PUBACK / PUBREC reason code (0x80 and above: negative).
    reason_code   smallint,
    PRIMARY KEY (product_id, message_id, ack_client_id)
);

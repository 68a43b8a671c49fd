-- Facts about this database that replicas starting together must agree on; a row doubles as
-- a lock (`bootstrap_admin`: the id of the key the last bootstrap made).
CREATE TABLE platform_meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Sample product database for the enricher tests (SQLite).
CREATE TABLE customers (
  id           INTEGER PRIMARY KEY,
  name         TEXT NOT NULL,
  email        TEXT NOT NULL,
  tier         TEXT,            -- 'gold; silver' style values must not split the script
  signed_up_at DATETIME
);
CREATE TABLE coupons (
  code    TEXT PRIMARY KEY,
  percent INTEGER NOT NULL
);
/* customers 1..10; 42 is inserted by the grace test */
INSERT INTO customers (id, name, email, tier, signed_up_at) VALUES
  (1, 'Ada Lovelace', 'ada@example.com', 'gold; founder', '2020-01-02 03:04:05'),
  (2, 'Grace Hopper', 'grace@example.com', 'silver', '2021-06-07 08:09:10'),
  (3, 'Alan Turing', 'alan@example.com', NULL, NULL),
  (4, 'Edsger Dijkstra', 'edsger@example.com', 'silver', NULL),
  (5, 'Barbara Liskov', 'barbara@example.com', 'gold', NULL),
  (6, 'Donald Knuth', 'don@example.com', 'bronze', NULL),
  (7, 'Ken Thompson', 'ken@example.com', 'bronze', NULL),
  (8, 'Dennis Ritchie', 'dmr@example.com', 'gold', NULL),
  (9, 'Margaret Hamilton', 'margaret@example.com', 'gold', NULL),
  (10, 'John McCarthy', 'john@example.com', 'silver', NULL);
INSERT INTO coupons (code, percent) VALUES ('WELCOME10', 10), ('VIP25', 25);
